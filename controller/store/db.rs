//! The store's SQL, written once for two databases. [`Db`] is one open connection (or one open
//! transaction) of either SQLite or PostgreSQL; statements use SQLite's `?1 ?2` placeholders and
//! plain [`Value`]s, and the PostgreSQL side rewrites the placeholders to `$1 $2` and converts
//! each value to the column type the server asks for. Where the dialects truly differ, the caller
//! picks the statement by [`Db::dialect`]. This layer never decides anything about rollbacks.
//!
//! PostgreSQL types each placeholder from its first use, and `?1 IS NULL` gives it none ("could
//! not determine data type of parameter $1"): optional filters are written
//! `(CAST(?1 AS TEXT) IS NULL OR env = ?1)`, which SQLite reads the same way.

use postgres::types::{FromSql, IsNull, ToSql, Type};

use super::StoreError;

/// Which SQL a [`Db`] speaks, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A parameter or a column value, in the few types the store uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(i64::from(v))
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// Builds the parameter slice of a statement: `vals![id, name, maybe_tag]`.
#[macro_export]
macro_rules! vals {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::db::Value::from($v)),*][..]
    };
}
pub use crate::vals;

/// One result row; columns by position, as in the statement's select list.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `i` as `T`; a missing column or a value of another type is [`StoreError::Corrupt`].
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, StoreError> {
        let v = self
            .0
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {i} in a result row")))?;
        T::from_value(v)
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} holds unexpected {v:?}")))
    }
}

/// A Rust type a column converts to; `None` when the value does not fit.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for u32 {
    fn from_value(v: &Value) -> Option<u32> {
        match v {
            Value::Int(i) => u32::try_from(*i).ok(),
            _ => None,
        }
    }
}
impl FromValue for bool {
    /// SQLite has no boolean type: flags are stored as 0/1 there, as `BOOLEAN` in PostgreSQL.
    fn from_value(v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::Int(0) => Some(false),
            Value::Int(1) => Some(true),
            _ => None,
        }
    }
}
impl FromValue for f64 {
    /// SQLite returns a `REAL` column holding a whole number as an integer.
    fn from_value(v: &Value) -> Option<f64> {
        match v {
            Value::Real(r) => Some(*r),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Option<T>> {
        match v {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One connection, or one open transaction, of either database.
pub trait Db {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;
    /// The first row, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// SQLite through rusqlite: a connection, or a transaction (which derefs to one).
pub(super) struct SqliteDb<'a>(pub(super) &'a rusqlite::Connection);

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value as V, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(V::Null),
            Value::Int(i) => ToSqlOutput::Owned(V::Integer(*i)),
            Value::Real(r) => ToSqlOutput::Owned(V::Real(*r)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bool(b) => ToSqlOutput::Owned(V::Integer(i64::from(*b))),
        })
    }
}

impl Db for SqliteDb<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let n = stmt.execute(rusqlite::params_from_iter(params))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.0.prepare_cached(sql)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(width);
            for i in 0..width {
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(f) => Value::Real(f),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(_) => {
                        return Err(StoreError::Corrupt(format!(
                            "column {i} holds a blob; the store writes none"
                        )))
                    }
                });
            }
            out.push(Row(row));
        }
        Ok(out)
    }
}

/// PostgreSQL through the sync client: a `Client` or a `Transaction`.
pub(super) struct PgDb<'a, C: postgres::GenericClient>(pub(super) &'a mut C);

/// `?N` (SQLite) to `$N` (PostgreSQL). The store's SQL has no `?` inside string literals.
pub(super) fn pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|n| n.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// Wrong-type errors of the PostgreSQL conversion, reported in the store's words.
#[derive(Debug, thiserror::Error)]
#[error("cannot send {value:?} as a PostgreSQL {ty} parameter")]
struct Mismatch {
    value: Value,
    ty: String,
}

impl ToSql for Value {
    /// Sends the value as the type the server inferred for the placeholder, so one `Value::Int`
    /// serves `BIGINT`, `INTEGER`, `SMALLINT`, `BOOLEAN` (0/1) and `DOUBLE PRECISION` columns.
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mismatch = || -> Box<dyn std::error::Error + Sync + Send> {
            Box::new(Mismatch {
                value: self.clone(),
                ty: ty.name().to_string(),
            })
        };
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i).map_err(|_| mismatch())?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i).map_err(|_| mismatch())?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Value::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (*r as f32).to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(ty, out)
                }
                _ => Err(mismatch()),
            },
            Value::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                Type::INT8 => i64::from(*b).to_sql(ty, out),
                Type::INT4 => i32::from(*b).to_sql(ty, out),
                Type::INT2 => i16::from(*b).to_sql(ty, out),
                _ => Err(mismatch()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        // Any type: `to_sql` converts, or refuses with the value and the type named.
        true
    }

    postgres::types::to_sql_checked!();
}

/// Reads column `i` of a PostgreSQL row by its type.
fn pg_value(row: &postgres::Row, i: usize) -> Result<Value, StoreError> {
    fn get<'a, T: FromSql<'a>>(row: &'a postgres::Row, i: usize) -> Result<Option<T>, StoreError> {
        row.try_get::<_, Option<T>>(i).map_err(StoreError::from)
    }
    let ty = row.columns()[i].type_().clone();
    let v = match ty {
        Type::INT8 => get::<i64>(row, i)?.map(Value::Int),
        Type::INT4 => get::<i32>(row, i)?.map(|v| Value::Int(v.into())),
        Type::INT2 => get::<i16>(row, i)?.map(|v| Value::Int(v.into())),
        Type::FLOAT8 => get::<f64>(row, i)?.map(Value::Real),
        Type::FLOAT4 => get::<f32>(row, i)?.map(|v| Value::Real(v.into())),
        Type::BOOL => get::<bool>(row, i)?.map(Value::Bool),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            get::<String>(row, i)?.map(Value::Text)
        }
        other => {
            return Err(StoreError::Corrupt(format!(
                "column {i} has PostgreSQL type {other}, which the store does not read"
            )))
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

impl<C: postgres::GenericClient> Db for PgDb<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        Ok(self.0.execute(pg_placeholders(sql).as_str(), &refs)?)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.0.query(pg_placeholders(sql).as_str(), &refs)?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| pg_value(r, i))
                    .collect::<Result<_, _>>()
                    .map(Row)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_and_nothing_else_changes() {
        assert_eq!(
            pg_placeholders("SELECT a FROM t WHERE (?1 IS NULL OR b = ?1) AND c = ?12 AND d = '?'"),
            "SELECT a FROM t WHERE ($1 IS NULL OR b = $1) AND c = $12 AND d = '?'"
        );
    }

    #[test]
    fn rows_convert_to_the_asked_type() {
        let row = Row(vec![
            Value::Int(1),
            Value::Null,
            Value::Int(3),
            Value::Text("x".into()),
        ]);
        assert!(row.get::<bool>(0).unwrap());
        assert_eq!(row.get::<Option<i64>>(1).unwrap(), None);
        assert_eq!(row.get::<f64>(2).unwrap(), 3.0);
        assert_eq!(row.get::<String>(3).unwrap(), "x");
        assert!(row.get::<i64>(3).is_err());
        assert!(row.get::<i64>(9).is_err());
    }

    #[test]
    fn values_come_from_plain_types() {
        assert_eq!(Value::from(None::<String>), Value::Null);
        assert_eq!(Value::from(Some(2u32)), Value::Int(2));
        assert_eq!(vals![1i64, "a", true].len(), 3);
    }
}
