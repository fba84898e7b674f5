//! Image tags as the deploy pipeline produces them: a semantic version `vX.Y.Z`, a branch slug
//! (`develop`, `main`, `feature-x`) or a 40-hex commit SHA. Classifying a tag before acting is what
//! keeps a typo or an injected string from ever reaching `docker compose` or a remote shell.

use std::cmp::Ordering;
use std::fmt;

/// A validated image tag. Only values that passed [`Tag::parse`] exist, so every later step
/// (compose environment, `.env` file, ssh command line) may use it verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag {
    raw: String,
    kind: TagKind,
}

/// What the pipeline meant by a tag; semver tags can be ordered, the others cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagKind {
    Semver { major: u64, minor: u64, patch: u64 },
    CommitSha,
    BranchSlug,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TagError {
    #[error(
        "empty tag: give a version like v1.2.3, a branch slug like develop, or a 40-hex commit SHA"
    )]
    Empty,
    #[error("malformed tag {0:?}: a tag is v<major>.<minor>.<patch>, a branch slug (a-z, 0-9, '-', '.', '_', at most 128 chars, starting with a letter or digit) or a 40-hex commit SHA")]
    Malformed(String),
}

impl Tag {
    pub fn parse(raw: &str) -> Result<Tag, TagError> {
        if raw.is_empty() {
            return Err(TagError::Empty);
        }
        let kind = if let Some(v) = parse_semver(raw) {
            v
        } else if raw.len() == 40
            && raw
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            TagKind::CommitSha
        } else if is_slug(raw) {
            TagKind::BranchSlug
        } else {
            return Err(TagError::Malformed(raw.to_string()));
        };
        Ok(Tag {
            raw: raw.to_string(),
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn kind(&self) -> TagKind {
        self.kind
    }

    /// Human word for the kind, used in CLI output and records.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            TagKind::Semver { .. } => "semver",
            TagKind::CommitSha => "commit-sha",
            TagKind::BranchSlug => "branch",
        }
    }

    /// Semver ordering; `None` when either tag is not a version (branches and SHAs carry no order).
    pub fn semver_cmp(&self, other: &Tag) -> Option<Ordering> {
        match (self.kind, other.kind) {
            (
                TagKind::Semver {
                    major,
                    minor,
                    patch,
                },
                TagKind::Semver {
                    major: m2,
                    minor: n2,
                    patch: p2,
                },
            ) => Some((major, minor, patch).cmp(&(m2, n2, p2))),
            _ => None,
        }
    }
}

impl TryFrom<String> for Tag {
    type Error = TagError;
    fn try_from(s: String) -> Result<Tag, TagError> {
        Tag::parse(&s)
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> String {
        t.raw
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn parse_semver(raw: &str) -> Option<TagKind> {
    let rest = raw.strip_prefix('v')?;
    let mut parts = rest.split('.');
    let mut next = || -> Option<u64> {
        let p = parts.next()?;
        // Leading zeros are not semver and would make v1.02.0 == v1.2.0.
        if p.is_empty()
            || (p.len() > 1 && p.starts_with('0'))
            || !p.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        p.parse().ok()
    };
    let (major, minor, patch) = (next()?, next()?, next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(TagKind::Semver {
        major,
        minor,
        patch,
    })
}

/// GitLab's `CI_COMMIT_REF_SLUG` alphabet, which is also a valid Docker tag.
fn is_slug(raw: &str) -> bool {
    raw.len() <= 128
        && raw
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && raw.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        })
}

/// Orders tags the way people pick a rollback target: versions newest first, then branch slugs
/// alphabetically, then commit SHAs (which carry no order of their own).
pub fn display_order(mut tags: Vec<Tag>) -> Vec<Tag> {
    let rank = |t: &Tag| match t.kind {
        TagKind::Semver { .. } => 0,
        TagKind::BranchSlug => 1,
        TagKind::CommitSha => 2,
    };
    tags.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then_with(|| b.semver_cmp(a).unwrap_or(Ordering::Equal))
            .then_with(|| a.raw.cmp(&b.raw))
    });
    tags.dedup();
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_order_is_semver_desc_then_branches_then_shas() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let tags = [
            "v1.2.0", "develop", sha, "v1.10.0", "main", "v1.9.9", "v1.2.0",
        ]
        .iter()
        .map(|t| Tag::parse(t).unwrap())
        .collect();
        let ordered: Vec<String> = display_order(tags).into_iter().map(String::from).collect();
        assert_eq!(
            ordered,
            vec!["v1.10.0", "v1.9.9", "v1.2.0", "develop", "main", sha]
        );
    }

    #[test]
    fn semver_tags_are_versions_with_order() {
        let a = Tag::parse("v1.10.0").unwrap();
        let b = Tag::parse("v1.9.3").unwrap();
        assert_eq!(
            a.kind(),
            TagKind::Semver {
                major: 1,
                minor: 10,
                patch: 0
            }
        );
        assert_eq!(a.semver_cmp(&b), Some(Ordering::Greater));
    }

    #[test]
    fn forty_hex_chars_are_a_commit_sha() {
        let t = Tag::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
        assert_eq!(t.kind(), TagKind::CommitSha);
        assert_eq!(t.semver_cmp(&Tag::parse("v1.0.0").unwrap()), None);
    }

    #[test]
    fn branch_slugs_are_accepted() {
        for s in ["develop", "main", "feature-login", "release_2.1", "abc123"] {
            assert_eq!(Tag::parse(s).unwrap().kind(), TagKind::BranchSlug, "{s}");
        }
    }

    #[test]
    fn near_misses_fall_back_to_slug_or_fail() {
        // Not a version (leading zero, missing part) but still a valid slug-shaped tag.
        assert_eq!(Tag::parse("v1.02.0").unwrap().kind(), TagKind::BranchSlug);
        assert_eq!(Tag::parse("v1.2").unwrap().kind(), TagKind::BranchSlug);
        // 39 hex chars is a slug, not a SHA.
        assert_eq!(
            Tag::parse(&"a".repeat(39)).unwrap().kind(),
            TagKind::BranchSlug
        );
    }

    #[test]
    fn malformed_tags_are_refused_with_the_value() {
        for bad in [
            "V1.0.0",
            "v1.0.0;rm -rf /",
            "-develop",
            "a b",
            "tag$(id)",
            "ÄÖ",
            &"a".repeat(129),
        ] {
            match Tag::parse(bad) {
                Err(TagError::Malformed(v)) => assert_eq!(v, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert_eq!(Tag::parse(""), Err(TagError::Empty));
    }

    #[test]
    fn uppercase_sha_is_not_a_sha() {
        assert!(Tag::parse(&"A".repeat(40)).is_err());
    }
}
