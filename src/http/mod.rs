//! The HTTP/1.1 front end: parsing with limits (`request`), answers (`response`), the API's routes
//! (`routes`) and the connection loop (`server`). Talks to the store only through
//! [`crate::engine::Engine`].

pub mod batch;
pub mod cluster;
pub mod request;
pub mod response;
pub mod routes;
pub mod scan;
pub mod server;
pub mod stats;

pub use server::Server;
