//! The berth command-line front ends. They parse flags, call the libraries and print;
//! no container logic lives here.

pub mod log;
pub mod runc;
