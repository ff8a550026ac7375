//! (sandbox: under construction)
