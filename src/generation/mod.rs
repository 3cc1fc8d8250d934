//! FLUX generations. Each generation is one module (a folder) that owns what is particular to
//! it, beginning with its naming table (`flux1::NAMES`, `flux2::NAMES`); `table` is the type
//! every generation's table is an instance of, with the lookups the rest of the crate reads
//! names through, and `entry` the constructors the tables are written with. `detect` tells a
//! checkpoint's generation from its tensor names, by the tables.

pub mod detect;
pub mod entry;
pub mod flux1;
pub mod flux2;
pub mod table;

pub use table::{NamingTable, Role, Scope, Stream};
