//! FLUX generations. Each generation is one module (a folder) that owns what is particular to
//! it, beginning with its naming table (`flux1::NAMES`); `table` is the type every generation's
//! table is an instance of, with the lookups the rest of the crate reads names through.

pub mod flux1;
pub mod table;

pub use table::{NamingTable, Role, Scope, Stream};
