//! The server process's life: bind the port (refusing one that is taken), open the store, serve,
//! and on SIGTERM/SIGINT stop accepting, finish requests in flight, sync the WAL and return.

use std::net::SocketAddr;

use std::rc::Rc;

use tokio::signal::unix::{signal, SignalKind};

use crate::cluster::{ClusterConfig, ClusterNode};
use crate::config::{HttpConfig, StoreConfig};
use crate::engine::Engine;
use crate::fd_budget::FdBudget;
use crate::http::Server;
use crate::io::UringFs;

/// Pending connections the kernel queues for `accept`.
const LISTEN_BACKLOG: i32 = 4096;
/// Entries in the serving ring's submission queue.
const RING_ENTRIES: u32 = 4096;

/// Runs the server until a signal stops it. The error is a message for the operator.
pub fn run(
    mut store: StoreConfig,
    mut http: HttpConfig,
    cluster: Option<ClusterConfig>,
) -> Result<(), String> {
    crate::panic_trigger::install_abort_hook();
    let listener = bind(http.listen)?;
    let budget = fd_budget(&store, &http)?;
    store.max_open_tables =
        std::num::NonZeroUsize::new(budget.table_handles).ok_or("the fd budget gave tables no handle")?;
    http.max_connections = Some(budget.max_connections);
    // The serving ring's set-up is shared with every other ring (`io::ring::start`, which says
    // why it is what it is).
    crate::io::ring::start(RING_ENTRIES, serve(listener, store, http, budget, cluster))
}

/// Every connection is a descriptor: the soft limit is raised to the hard one (the soft one is
/// often 1024), as servers meant for many connections do, then split between the storage side
/// and connections ([`FdBudget`]).
fn fd_budget(store: &StoreConfig, http: &HttpConfig) -> Result<FdBudget, String> {
    let limit = crate::sys::raise_open_file_limit()
        .map_err(|error| format!("cannot read the open-file limit: {error}"))?;
    FdBudget::plan(limit, store.compaction_trigger, http.max_connections)
}

/// How long a taken port is tried again before giving up. A server killed with SIGKILL leaves its
/// listening socket behind for a moment: the kernel tears its `io_uring` down in the background,
/// and the accept still pending there holds the socket until then (a restart right after
/// `kill -9` failed 9 times in 10 here without this wait; `tests/operations.rs`).
const BIND_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(3);

/// Binds, trying a taken port again for [`BIND_RETRY_FOR`] (see there).
fn bind(address: SocketAddr) -> Result<std::net::TcpListener, String> {
    let deadline = std::time::Instant::now() + BIND_RETRY_FOR;
    let mut said = false;
    loop {
        match bind_once(address) {
            Err((true, message)) if std::time::Instant::now() < deadline => {
                if !said {
                    tracing::warn!("{message}; trying again for up to {BIND_RETRY_FOR:?} (a server killed just now may still hold it)");
                    said = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err((_, message)) => return Err(message),
            Ok(listener) => return Ok(listener),
        }
    }
}

/// Binds with the standard library rather than tokio-uring, whose `bind` sets `SO_REUSEPORT` and
/// would let a second server share a port silently. The error says whether the port was taken.
fn bind_once(address: SocketAddr) -> Result<std::net::TcpListener, (bool, String)> {
    use socket2::{Domain, Socket, Type};
    let fail = |error: std::io::Error| {
        if error.kind() == std::io::ErrorKind::AddrInUse {
            (true, format!("cannot listen on {address}: the address is already in use (another ringkv or another program holds it; choose one with --listen)"))
        } else {
            (false, format!("cannot listen on {address}: {error}"))
        }
    };
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None).map_err(fail)?;
    // SO_REUSEADDR only lets us rebind over TIME_WAIT sockets after a restart; without
    // SO_REUSEPORT a port held by a listening socket still fails with EADDRINUSE.
    socket.set_reuse_address(true).map_err(fail)?;
    socket.bind(&address.into()).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)?;
    Ok(socket.into())
}

async fn serve(
    listener: std::net::TcpListener,
    store: StoreConfig,
    http: HttpConfig,
    budget: FdBudget,
    cluster: Option<ClusterConfig>,
) -> Result<(), String> {
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    if cluster.is_none() && store.data_dir.join("raft").is_dir() {
        return Err(format!(
            "{} holds a cluster node's store (its raft/ directory): start it with --node-id and --peers, or it would fork from the cluster",
            store.data_dir.display()
        ));
    }
    let (engine, report) = Engine::open(UringFs, &store)
        .await
        .map_err(|error| format!("cannot open the store: {error}"))?;
    let listener = tokio_uring::net::TcpListener::from_std(listener);
    let address = listener
        .local_addr()
        .map_err(|error| format!("cannot read the listening address: {error}"))?;
    crate::logging::ready(&format!(
        "ringkv listening on {address}, data dir {}, fsync {} (WAL {} I/O, {}; requests may ask for a class down to {}); recovered {} records from {} WAL segments{} and {} tables, next version {}; WAL segment ready in {} ms; max connections {} (open-file limit {}, {} kept for storage, {} of them table handles)",
        store.data_dir.display(),
        store.fsync,
        store.wal_io,
        store.sync_call,
        store.min_durability,
        report.records,
        report.segments,
        if report.torn_tail { " (dropped a torn or damaged last record: a write the crash interrupted, or bit rot in the newest write)" } else { "" },
        report.tables,
        report.next_seq,
        report.wal_ready.as_millis(),
        budget.max_connections,
        budget.limit,
        budget.storage_reserve,
        budget.table_handles,
    ));
    let http_request_timeout = http.request_timeout;
    let node = match &cluster {
        Some(cluster) => {
            let holds_data = report.records > 0 || report.tables > 0;
            Some(ClusterNode::start(engine.clone(), &store, cluster, holds_data).await?)
        }
        None => None,
    };
    let limits = http.clone();
    let server = Server::new(engine.clone(), http);
    if let Some(node) = &node {
        server.serve_cluster(Rc::new(crate::http::cluster::ClusterHttp {
            node: node.clone(),
            limits,
        }));
        tracing::info!(
            "cluster node {} serving on {address}; peers {:?}",
            node.id,
            node.peers
        );
    }
    let accepting = tokio_uring::spawn(server.clone().accept_loop(listener));
    let signal_name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!("{signal_name}: no longer accepting; finishing requests in flight");
    server.stop();
    let _ = accepting.await;
    // Busy connections get as long as a request may take (`--request-timeout`), no more: a
    // client that does not read its answers cannot hold the shutdown up.
    let drain_limit = http_request_timeout;
    if !server.wait_drained(drain_limit).await {
        tracing::warn!("some connections were still busy after {drain_limit:?}; stopping anyway");
    }
    if let Some(node) = &node {
        node.shutdown().await;
    }
    engine
        .close()
        .await
        .map_err(|error| format!("could not make the WAL durable on shutdown: {error}"))?;
    tracing::info!("stopped; WAL synced");
    Ok(())
}
