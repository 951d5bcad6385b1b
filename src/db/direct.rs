//! Running the write path's statements on each backend's own connection, and updates that are
//! prepared once.
//!
//! Two costs that diesel's defaults put on every statement. Profiled at 800 deposits/s on
//! SQLite, they were a fifth of the writer thread's time:
//! - `MultiConnection` wraps each query in a shim that builds the statement's SQL text on every
//!   call to collect its binds, even when the prepared statement is cached under the query's
//!   type. [`execute`] and [`on_backend!`](crate::on_backend) run the query on the backend's own
//!   connection instead, where a cached statement costs only its binds.
//! - diesel never caches an `UPDATE`, because a changeset with optional columns has several
//!   texts; every update was parsed and planned again. [`update`] builds the same statement,
//!   cached under its SQL text, so each text it takes is prepared once per connection.
//!
//! Both keep diesel's typed query builder: the statements are the same, only how they are run
//! changes. They are for the statements the writer runs for every parcel; the rest stay on
//! `MultiConnection`'s own methods.

use diesel::backend::Backend;
use diesel::connection::Connection;
use diesel::expression::{AppearsOnTable, Expression};
use diesel::pg::Pg;
use diesel::query_builder::{AsChangeset, AstPass, QueryFragment, QueryId};
use diesel::query_source::{QuerySource, Table};
use diesel::sql_types::BoolOrNullableBool;
use diesel::sqlite::Sqlite;
use diesel::QueryResult;

use super::DbConn;

/// `UPDATE table SET changeset WHERE filter`, cached under its SQL text.
///
/// The same statement as `diesel::update(table.filter(filter)).set(changeset)`, without the
/// mark diesel's update puts on every walk of its tree that makes the cache skip it (a wrapper
/// cannot lift it: the cache asks through a reference, which walks the tree).
///
/// An update whose changeset has optional columns takes one text per combination that callers
/// use, a handful, and each is prepared once. Never with an `IN` list, whose text changes with
/// the list's length and would fill the cache.
pub struct Update<T: QuerySource, V, W> {
    from: T::FromClause,
    set: V,
    filter: W,
}

/// An [`Update`] of the rows of `table` matching `filter`.
pub fn update<T, V, W>(table: T, filter: W, changeset: V) -> Update<T, V::Changeset, W>
where
    T: Table,
    V: AsChangeset<Target = T>,
    W: Expression + AppearsOnTable<T>,
    W::SqlType: BoolOrNullableBool,
{
    Update {
        from: table.from_clause(),
        set: changeset.as_changeset(),
        filter,
    }
}

impl<T: QuerySource, V, W> QueryId for Update<T, V, W> {
    // No static id: the cache key is the SQL text (with the bind types), so two texts of one
    // query type never share a prepared statement.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<T, V, W, DB> QueryFragment<DB> for Update<T, V, W>
where
    T: QuerySource,
    T::FromClause: QueryFragment<DB>,
    V: QueryFragment<DB>,
    W: QueryFragment<DB>,
    DB: Backend,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE ");
        self.from.walk_ast(out.reborrow())?;
        out.push_sql(" SET ");
        self.set.walk_ast(out.reborrow())?;
        out.push_sql(" WHERE ");
        self.filter.walk_ast(out.reborrow())?;
        Ok(())
    }
}

/// Runs a statement that returns no rows; the number of rows it changed.
pub fn execute<Q>(conn: &mut DbConn, query: Q) -> QueryResult<usize>
where
    Q: QueryFragment<Sqlite> + QueryFragment<Pg> + QueryId,
{
    match conn {
        DbConn::Sqlite(c) => c.execute_returning_count(&query),
        DbConn::Pg(c) => c.execute_returning_count(&query),
    }
}

/// Runs `$body` with `$c` bound to the backend's own connection. The body is compiled once per
/// backend, so a query whose type depends on the backend (a `Selectable` struct's
/// `as_select()`) is built in it: `on_backend!(conn, |c| query.get_result(c))`.
#[macro_export]
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConn::Sqlite($c) => $body,
            $crate::db::DbConn::Pg($c) => $body,
        }
    };
}

/// A statement followed by fixed SQL text, cached under the whole text: an `ON CONFLICT`
/// clause both backends read alike where diesel's builder has no common form (a `WHERE` on
/// `DO UPDATE` is PostgreSQL-only in diesel, though SQLite takes it too).
pub struct Suffixed<Q> {
    query: Q,
    suffix: &'static str,
}

/// `query` with `suffix` after it. The suffix is SQL, never input: it takes no binds.
pub fn suffixed<Q>(query: Q, suffix: &'static str) -> Suffixed<Q> {
    Suffixed { query, suffix }
}

impl<Q> QueryId for Suffixed<Q> {
    // Keyed by its text, like `Update`: one query type with two suffixes is two statements.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for Suffixed<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.query.walk_ast(out.reborrow())?;
        out.push_sql(self.suffix);
        Ok(())
    }
}
