//! Table retirement on the serving ring: a table a compaction removed stays open, and its file
//! on disk, until no read in flight holds a version that names it. Reads are counted by the
//! install (version change) they started under. No I/O.

use std::cell::RefCell;
use std::collections::VecDeque;

/// Takes the tables no read can need any more out of `retiring` (tables, by the install that
/// removed them): those removed at or before `oldest_read`, the install whose version the oldest
/// read in flight holds (all of them when no read is in flight).
pub(super) fn take_releasable(retiring: &mut Vec<(u64, Vec<u64>)>, oldest_read: Option<u64>) -> Vec<u64> {
    let mut released = Vec::new();
    retiring.retain_mut(|(removed_by, obsolete)| {
        if oldest_read.is_some_and(|oldest| oldest < *removed_by) {
            return true;
        }
        released.append(obsolete);
        false
    });
    released
}

/// Reads in flight counted by the install whose version they hold. A read always takes the
/// newest install, so entries stay in install order; emptied ones are dropped from the front.
/// No allocation per read once the deque has grown to the number of installs a read can span.
#[derive(Default)]
pub(super) struct ReadsByInstall(VecDeque<(u64, usize)>);

impl ReadsByInstall {
    pub(super) fn oldest(&self) -> Option<u64> {
        self.0.front().map(|&(install, _)| install)
    }
}

/// Counts a read as holding the version of one install until dropped (also when the read fails
/// or its future is dropped mid-way).
pub(super) struct ReadPin<'a> {
    reads: &'a RefCell<ReadsByInstall>,
    install: u64,
}

impl<'a> ReadPin<'a> {
    pub(super) fn new(reads: &'a RefCell<ReadsByInstall>, install: u64) -> Self {
        let mut reads_mut = reads.borrow_mut();
        match reads_mut.0.back_mut() {
            Some((newest, count)) if *newest == install => *count += 1,
            _ => reads_mut.0.push_back((install, 1)),
        }
        ReadPin { reads, install }
    }
}

impl Drop for ReadPin<'_> {
    fn drop(&mut self) {
        let mut reads = self.reads.borrow_mut();
        if let Some((_, count)) = reads.0.iter_mut().find(|(install, _)| *install == self.install) {
            *count -= 1;
        }
        while reads.0.front().is_some_and(|&(_, count)| count == 0) {
            reads.0.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::take_releasable;

    /// A read that started two installs ago still needs a table the latest install removed,
    /// though no read holds the version just before it (the rule this replaced deleted it).
    #[test]
    fn a_table_waits_for_every_read_that_started_before_its_removal() {
        let mut retiring = vec![(3, vec![30])];
        assert_eq!(take_releasable(&mut retiring, Some(1)), Vec::<u64>::new());
        assert_eq!(take_releasable(&mut retiring, Some(2)), Vec::<u64>::new());
        assert_eq!(take_releasable(&mut retiring, Some(3)), vec![30]);
        let mut retiring = vec![(2, vec![20, 21]), (4, vec![40])];
        assert_eq!(take_releasable(&mut retiring, Some(3)), vec![20, 21]);
        assert_eq!(take_releasable(&mut retiring, None), vec![40]);
        assert!(retiring.is_empty());
    }
}
