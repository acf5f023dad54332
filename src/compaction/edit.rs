//! The version edit a finished compaction makes (mini-lsm's `apply_compaction_result`): a pure
//! function of the task and the tables it wrote, tested on its own. No I/O.

use std::sync::Arc;

use super::Task;
use crate::sst::TableMeta;
use crate::version::VersionEdit;

/// Removes every input (from `task.level`) and every overlapping table (from the level below) and
/// adds `outputs` to the level below. A move's one output is its one input, unchanged.
pub fn edit_for(task: &Task, outputs: Vec<Arc<TableMeta>>) -> VersionEdit {
    let target = task.target_level();
    if task.is_move() {
        assert!(
            outputs.len() == 1 && outputs[0].number == task.inputs[0],
            "a move's output is its input"
        );
    }
    assert!(
        outputs
            .iter()
            .all(|output| !task.overlapping.contains(&output.number)),
        "an output reuses the number of a table it replaces"
    );
    let mut edit = VersionEdit::default();
    edit.removed
        .extend(task.inputs.iter().map(|&number| (task.level, number)));
    edit.removed
        .extend(task.overlapping.iter().map(|&number| (target, number)));
    edit.added
        .extend(outputs.into_iter().map(|table| (target, table)));
    edit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sst::bloom::BloomFilter;
    use crate::sst::format::Footer;
    use bytes::Bytes;

    fn table(number: u64) -> Arc<TableMeta> {
        TableMeta::new(
            number,
            format!("/d/{number}.sst").into(),
            4096,
            Footer::default(),
            Bytes::from_static(b"a"),
            Bytes::from_static(b"z"),
            Vec::new(),
            BloomFilter::build(&[]),
        )
    }

    fn task(level: usize, inputs: &[u64], overlapping: &[u64]) -> Task {
        Task {
            level,
            inputs: inputs.to_vec(),
            overlapping: overlapping.to_vec(),
            bottommost: false,
            largest: Bytes::from_static(b"z"),
        }
    }

    /// (level, table number) pairs: removed, then added.
    type Changes = (Vec<(usize, u64)>, Vec<(usize, u64)>);

    fn numbers(edit: &VersionEdit) -> Changes {
        let added = edit.added.iter().map(|(level, t)| (*level, t.number)).collect();
        (edit.removed.clone(), added)
    }

    #[test]
    fn a_merge_replaces_its_inputs_and_the_overlapping_tables_by_its_outputs() {
        let cases: [(Task, Vec<u64>, Changes); 3] = [
            // All of L0 with the overlapping L1 tables.
            (
                task(0, &[7, 6], &[2, 3]),
                vec![8, 9],
                (vec![(0, 7), (0, 6), (1, 2), (1, 3)], vec![(1, 8), (1, 9)]),
            ),
            // One L2 table with nothing below: moved, not rewritten.
            (task(2, &[5], &[]), vec![5], (vec![(2, 5)], vec![(3, 5)])),
            // Everything was a tombstone: no output.
            (task(1, &[4], &[1]), vec![], (vec![(1, 4), (2, 1)], vec![])),
        ];
        for (task, outputs, expected) in cases {
            let outputs = outputs.into_iter().map(table).collect();
            assert_eq!(numbers(&edit_for(&task, outputs)), expected, "{task:?}");
        }
    }

    #[test]
    #[should_panic(expected = "a move's output is its input")]
    fn a_move_cannot_change_its_table() {
        edit_for(&task(1, &[5], &[]), vec![table(6)]);
    }
}
