//! `high-availability.type: etcd`: the high-availability services of `rflink-runtime` on etcd.

pub mod testing;
