//! Rewrites of the lifted graph. Each pass takes `&mut Graph` (and what it needs besides),
//! decides with small pure rules, and returns a report for the end-of-run summary.

pub mod lora;
