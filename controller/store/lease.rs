//! The lease row and the fencing checks, in the store so that a check and the write it guards
//! are one transaction. PostgreSQL only: a SQLite store has one instance (the file lock), so its
//! checks pass and its records carry epoch 0.
//!
//! Expiry is set and compared with the database's `now()`, never an instance's clock, so a
//! leader whose clock jumps or whose process was frozen cannot extend its own lease.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::db::{Db, Dialect, Value};
use super::{Store, StoreError};
use crate::lease::{Fence, LeaseBackend, LeaseHolder};

/// Why a fenced step may not run.
struct Refusal(String);

/// Checks, inside the caller's transaction, that `fence` still holds the lease. The row is
/// locked `FOR SHARE` until the transaction ends: a takeover (an UPDATE of that row) waits for
/// the guarded write to commit, and every write after it sees the new epoch.
fn check_lease(db: &mut dyn Db, fence: &Fence) -> Result<Result<(), Refusal>, StoreError> {
    if db.dialect() == Dialect::Sqlite {
        return Ok(Ok(()));
    }
    let held = db.query_opt(
        "SELECT epoch FROM leader_lease WHERE id = 1 AND holder = ?1 AND epoch = ?2
           AND expires_at > now() FOR SHARE",
        &[Value::from(fence.holder.as_str()), Value::from(fence.epoch)],
    )?;
    if held.is_some() {
        return Ok(Ok(()));
    }
    let now = db.query_opt(
        "SELECT holder, epoch, expires_at > now() FROM leader_lease WHERE id = 1",
        &[],
    )?;
    let why = match now {
        Some(row) => {
            let (holder, epoch, live): (String, i64, bool) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            if epoch == fence.epoch && holder == fence.holder {
                format!("the lease of {holder} (epoch {epoch}) ran out")
            } else if live {
                format!(
                    "epoch {} of {} is stale: {holder} leads under epoch {epoch}",
                    fence.epoch, fence.holder
                )
            } else {
                format!(
                    "epoch {} of {} is stale: the lease is at epoch {epoch} and unheld",
                    fence.epoch, fence.holder
                )
            }
        }
        None => format!("no lease was ever taken (epoch {})", fence.epoch),
    };
    Ok(Err(Refusal(why)))
}

/// Checks that rollback `id` still belongs to `fence`'s epoch (a newer leader claims a record
/// when it resumes it).
fn check_record(
    db: &mut dyn Db,
    id: i64,
    fence: &Fence,
) -> Result<Result<(), Refusal>, StoreError> {
    let row = db.query_opt(
        "SELECT epoch, state FROM rollbacks WHERE id = ?1",
        &[Value::from(id)],
    )?;
    let Some(row) = row else {
        return Err(StoreError::Corrupt(format!("rollback #{id} vanished")));
    };
    let (epoch, state): (i64, String) = (row.get(0)?, row.get(1)?);
    if epoch != fence.epoch {
        return Ok(Err(Refusal(format!(
            "rollback #{id} was taken up under epoch {epoch}"
        ))));
    }
    if state != "intent" {
        return Ok(Err(Refusal(format!("rollback #{id} is already {state}"))));
    }
    Ok(Ok(()))
}

/// Stores a refusal as a `fenced` event of the record's target, in the same transaction.
fn record_refusal(
    db: &mut dyn Db,
    id: i64,
    fence: &Fence,
    step: &str,
    why: &str,
) -> Result<String, StoreError> {
    let message = format!(
        "step {step} of rollback #{id} by {} (epoch {}) refused: {why}",
        fence.holder, fence.epoch
    );
    db.execute(
        "INSERT INTO events (at_ms, env, role, kind, tag, message)
         SELECT ?1, env, role, 'fenced', to_tag, ?2 FROM rollbacks WHERE id = ?3",
        &[
            Value::from(super::now_ms()),
            Value::from(message.as_str()),
            Value::from(id),
        ],
    )?;
    Ok(message)
}

impl Store {
    /// Before each step of rollback `id`: may `fence` still act on it? A refusal is stored (a
    /// `fenced` event) and returned as [`StoreError::Fenced`].
    pub async fn fence_step(&self, id: i64, fence: Fence, step: String) -> Result<(), StoreError> {
        let refused = self
            .with_tx(move |db| {
                let check = match check_lease(db, &fence)? {
                    Ok(()) => check_record(db, id, &fence)?,
                    refused => refused,
                };
                match check {
                    Ok(()) => Ok(None),
                    Err(Refusal(why)) => record_refusal(db, id, &fence, &step, &why).map(Some),
                }
            })
            .await?;
        match refused {
            None => Ok(()),
            Some(why) => Err(StoreError::Fenced { why }),
        }
    }

    /// Passes an unfinished rollback to `fence`'s epoch, so that whoever wrote it is refused
    /// from now on. Refused when the lease is not `fence`'s or the record is no longer an intent.
    pub async fn claim_rollback(&self, id: i64, fence: Fence) -> Result<(), StoreError> {
        let refused = self
            .with_tx(move |db| {
                if let Err(Refusal(why)) = check_lease(db, &fence)? {
                    return Ok(Some(why));
                }
                let n = db.execute(
                    "UPDATE rollbacks SET epoch = ?1 WHERE id = ?2 AND state = 'intent' AND epoch <= ?1",
                    &[Value::from(fence.epoch), Value::from(id)],
                )?;
                Ok((n == 0).then(|| {
                    format!("rollback #{id} is finished or was taken up by a newer epoch")
                }))
            })
            .await?;
        match refused {
            None => Ok(()),
            Some(why) => Err(StoreError::Fenced { why }),
        }
    }

    /// The transaction body of a fenced write: refused (and nothing written) unless `fence`
    /// holds the lease. Used by the intent and the outcome of a rollback.
    pub(super) fn fenced_write<T>(
        db: &mut dyn Db,
        fence: &Fence,
        write: impl FnOnce(&mut dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match check_lease(db, fence)? {
            Ok(()) => write(db),
            Err(Refusal(why)) => Err(StoreError::Fenced { why }),
        }
    }
}

impl LeaseBackend for Store {
    fn acquire<'a>(
        &'a self,
        holder: &'a str,
        address: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreError>> {
        let (holder, address) = (holder.to_string(), address.to_string());
        Box::pin(self.with_tx(move |db| {
            if db.dialect() == Dialect::Sqlite {
                return Ok(Some(0));
            }
            // A row lock held elsewhere (a fenced write in flight) is waited on briefly, not
            // for the whole statement timeout: the next renewal comes within a second.
            db.execute("SET LOCAL lock_timeout = '1s'", &[])?;
            // The epoch grows whenever the lease changes hands or lapsed, even back to the
            // same holder: a gap means someone else may have acted.
            let row = db.query_opt(
                "INSERT INTO leader_lease (id, holder, address, epoch, expires_at)
                 VALUES (1, ?1, ?2, 1, now() + make_interval(secs => ?3))
                 ON CONFLICT (id) DO UPDATE SET
                   epoch = CASE WHEN leader_lease.holder = excluded.holder
                                 AND leader_lease.expires_at > now()
                            THEN leader_lease.epoch ELSE leader_lease.epoch + 1 END,
                   holder = excluded.holder, address = excluded.address,
                   expires_at = excluded.expires_at
                 WHERE leader_lease.holder = excluded.holder OR leader_lease.expires_at <= now()
                 RETURNING epoch",
                &[
                    Value::from(holder.as_str()),
                    Value::from(address.as_str()),
                    Value::Real(ttl.as_secs_f64()),
                ],
            )?;
            row.map(|r| r.get(0)).transpose()
        }))
    }

    fn release<'a>(&'a self, holder: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let holder = holder.to_string();
        Box::pin(self.with(move |db| {
            if db.dialect() == Dialect::Postgres {
                db.execute(
                    "UPDATE leader_lease SET expires_at = now() WHERE id = 1 AND holder = ?1",
                    &[Value::from(holder.as_str())],
                )?;
            }
            Ok(())
        }))
    }

    fn holder(&self) -> BoxFuture<'_, Result<Option<LeaseHolder>, StoreError>> {
        Box::pin(self.with(|db| {
            if db.dialect() == Dialect::Sqlite {
                return Ok(None);
            }
            let row = db.query_opt(
                "SELECT holder, address, epoch FROM leader_lease WHERE id = 1 AND expires_at > now()",
                &[],
            )?;
            row.map(|r| {
                Ok(LeaseHolder {
                    holder: r.get(0)?,
                    address: r.get(1)?,
                    epoch: r.get(2)?,
                })
            })
            .transpose()
        }))
    }
}
