//! Building ReQL terms and reading RethinkDB values.
//!
//! The typed reql API covers the commands that take options (update, between,
//! table_create, index_create); every other term is built directly from its
//! `TermType`, with the arguments in the order the ReQL wire protocol gives.

use ql2::term::TermType;
use reql::{r, Command, Func};
use serde_json::Value;
use time::OffsetDateTime;

pub(super) fn term<const N: usize>(typ: TermType, args: [Command; N]) -> Command {
    args.into_iter()
        .fold(Command::new(typ), |cmd, arg| cmd.with_arg(arg))
}

/// A literal value (arrays and objects become literal terms).
pub(super) fn lit<T: serde::Serialize>(value: T) -> Command {
    r.expr(value)
}

pub(super) fn null() -> Command {
    lit(Value::Null)
}

pub(super) fn field(doc: &Command, name: &str) -> Command {
    term(TermType::GetField, [doc.clone(), lit(name)])
}

/// `doc(name).default(fallback)`: a missing field reads as `fallback`.
pub(super) fn field_or(doc: &Command, name: &str, fallback: Command) -> Command {
    term(TermType::Default, [field(doc, name), fallback])
}

pub(super) fn eq(a: Command, b: Command) -> Command {
    term(TermType::Eq, [a, b])
}
pub(super) fn ne(a: Command, b: Command) -> Command {
    term(TermType::Ne, [a, b])
}
pub(super) fn le(a: Command, b: Command) -> Command {
    term(TermType::Le, [a, b])
}
pub(super) fn gt(a: Command, b: Command) -> Command {
    term(TermType::Gt, [a, b])
}
pub(super) fn lt(a: Command, b: Command) -> Command {
    term(TermType::Lt, [a, b])
}
pub(super) fn ge(a: Command, b: Command) -> Command {
    term(TermType::Ge, [a, b])
}
pub(super) fn and(a: Command, b: Command) -> Command {
    term(TermType::And, [a, b])
}
pub(super) fn or(a: Command, b: Command) -> Command {
    term(TermType::Or, [a, b])
}
pub(super) fn add(a: Command, b: Command) -> Command {
    term(TermType::Add, [a, b])
}
pub(super) fn branch(test: Command, then: Command, otherwise: Command) -> Command {
    term(TermType::Branch, [test, then, otherwise])
}

/// `r.object(k1, v1, k2, v2, …)`.
pub(super) fn object<K: AsRef<str>>(pairs: Vec<(K, Command)>) -> Command {
    pairs
        .into_iter()
        .fold(Command::new(TermType::Object), |cmd, (k, v)| {
            cmd.with_arg(lit(k.as_ref())).with_arg(v)
        })
}

/// A one-argument ReQL function, as a term.
pub(super) fn lambda(body: impl FnOnce(Command) -> Command) -> Command {
    let id = reql::var_counter();
    let body = body(Command::var(id));
    term(TermType::Func, [lit(vec![id]), body])
}

/// `r.do(arg, f)`: `arg` evaluated first (writes included), then `f` of it.
pub(super) fn funcall(arg: Command, f: impl FnOnce(Command) -> Command) -> Command {
    term(TermType::Funcall, [lambda(f), arg])
}

/// A one-argument ReQL function for the typed commands that want a [`Func`].
pub(super) fn func(body: impl FnOnce(Command) -> Command) -> Func {
    let id = reql::var_counter();
    Func::new(vec![id], body(Command::var(id)))
}

pub(super) fn min_term(a: Command, b: Command) -> Command {
    branch(lt(a.clone(), b.clone()), a, b)
}

pub(super) fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(super) fn from_ms(v: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(v as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(super) fn wall_ms() -> i64 {
    ms(OffsetDateTime::now_utc())
}

/// An integer from a JSON number (RethinkDB numbers are doubles).
pub(super) fn as_int(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    let f = v.as_f64()?;
    (f.fract() == 0.0 && f.abs() <= (1u64 << 53) as f64).then_some(f as i64)
}

pub(super) fn opt_str(doc: &Value, name: &str) -> Option<String> {
    doc.get(name).and_then(Value::as_str).map(str::to_string)
}

pub(super) fn opt_int(doc: &Value, name: &str) -> Option<i64> {
    doc.get(name).and_then(as_int)
}

pub(super) fn parse_opt<T: std::str::FromStr>(v: Option<String>) -> Option<T> {
    v.and_then(|s| s.parse().ok())
}
