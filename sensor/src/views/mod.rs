//! Views for people: one line per event for `custos tail -o compact`, its filters, and the
//! readable summary `custos status` prints.
pub mod compact;
pub mod filter;
pub mod status;
