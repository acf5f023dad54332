//! The open-file budget: how the process's descriptor limit is split between the storage side
//! and client connections, so that no number of clients can take the descriptors a WAL segment
//! switch, a flush or a compaction needs. (With the limit at 200 and 200 idle keep-alive
//! clients, the first write could not open a WAL segment, and the store turned read-only.)
//!
//! The storage side gets a fixed reserve, compaction inputs sized by the compaction trigger,
//! and a bounded number of open table handles (`TableReaders` keeps the most recently used ones
//! open and opens others per read). Connections get the rest, one descriptor each; past that,
//! a new connection is answered 503 and closed.

/// Descriptors the storage side holds besides table handles and compaction inputs: standard
/// streams, the listener, both rings and the runtime's own descriptors, the WAL's current,
/// spare and closing segments, recovery's reads, the manifest and its rewrite, the directory
/// lock and directory syncs, a flush's and a compaction's output tables, and the one descriptor
/// a refused connection holds while it is told 503.
pub const BASE_RESERVE: u64 = 48;

/// Fewest connections worth starting a server for.
pub const MIN_CONNECTIONS: u64 = 8;

/// How the descriptor limit is split. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The process's open-file limit (`RLIMIT_NOFILE`, after raising the soft limit).
    pub limit: u64,
    /// Table files kept open for reads.
    pub table_handles: usize,
    /// Everything the storage side may hold (table handles included).
    pub storage_reserve: u64,
    pub max_connections: usize,
}

impl FdBudget {
    /// Splits `limit`; `requested` is `--max-connections`, if given.
    pub fn plan(limit: u64, compaction_trigger: usize, requested: Option<usize>) -> Result<FdBudget, String> {
        // A compaction reads all of L0 and the L1 files it overlaps (L1 holds about twice the
        // trigger's count of files), or one file and about ten of the next level.
        let compaction_inputs = 3 * compaction_trigger as u64 + 12;
        let table_handles = (limit / 4).clamp(16, 100_000);
        let storage_reserve = BASE_RESERVE + compaction_inputs + table_handles;
        let available = limit.saturating_sub(storage_reserve);
        if available < MIN_CONNECTIONS {
            return Err(format!(
                "the open-file limit {limit} is too low: the storage side needs {storage_reserve} descriptors and connections at least {MIN_CONNECTIONS}; raise it (ulimit -n)"
            ));
        }
        let max_connections = match requested {
            Some(requested) if requested as u64 > available => {
                return Err(format!(
                    "--max-connections {requested} is more than the open-file limit {limit} allows after the storage side's {storage_reserve}: at most {available}; raise the limit (ulimit -n) or ask for fewer"
                ))
            }
            Some(0) => return Err("--max-connections must be at least 1".to_string()),
            Some(requested) => requested,
            None => usize::try_from(available).unwrap_or(usize::MAX),
        };
        Ok(FdBudget {
            limit,
            table_handles: usize::try_from(table_handles).unwrap_or(usize::MAX),
            storage_reserve,
            max_connections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_limit_and_refuses_what_cannot_work() {
        let budget = FdBudget::plan(200, 4, None).unwrap();
        assert_eq!(budget.table_handles, 50);
        assert_eq!(budget.storage_reserve, 48 + 24 + 50);
        assert_eq!(budget.max_connections, 200 - 122);
        assert_eq!(FdBudget::plan(200, 4, Some(10)).unwrap().max_connections, 10);
        assert!(FdBudget::plan(200, 4, Some(79))
            .unwrap_err()
            .contains("at most 78"));
        assert!(FdBudget::plan(100, 4, None).unwrap_err().contains("too low"));
        let large = FdBudget::plan(1 << 20, 64, None).unwrap();
        assert_eq!(large.table_handles, 100_000);
        assert!(large.max_connections > 900_000);
    }
}
