#![allow(dead_code)]
//! Test fixtures shared by the black-box tests.

pub mod browser;
pub mod chump;
pub mod conformance;
pub mod env;
pub mod git_server;
pub mod https_git;
pub mod kept_list;
pub mod kube_api;
pub mod receiver;
pub mod rethinkdb;
pub mod sshd;
