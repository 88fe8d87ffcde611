//! Empty library target: lets `sensor` name this crate as a build dependency, so cargo rebuilds
//! the programs when their sources change. The programs themselves are the `sensor` binary.
#![no_std]
