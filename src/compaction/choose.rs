//! What to compact next: a pure function of the tables per level (number, size, key range), the
//! per-level compaction pointers and the policy. No I/O, no clock, no randomness.
//!
//! - L0 is scored by file count (`files / l0_trigger`); level L ≥ 1 by bytes against its target
//!   (`level1_bytes × ratio^(L−1)`). The highest score ≥ 1 is compacted; the last level never is.
//! - From L0, all its files go (they may overlap each other) with every overlapping L1 file.
//! - From L ≥ 1, one file: the first whose smallest key is after the level's pointer (wrapping),
//!   so successive compactions sweep the key space; with every overlapping file of L+1. A file
//!   with no overlap below is moved, not rewritten.
//! - Tombstones may be dropped only when no level below the target holds any key in the range.

use bytes::Bytes;

use crate::config::{StoreConfig, LEVEL_RATIO};
pub use crate::version::TableSummary;

/// Shape of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// L0 file count that triggers a compaction (`--compaction-trigger`).
    pub l0_trigger: usize,
    pub level1_bytes: u64,
    pub level_ratio: u64,
}

/// One compaction: merge `inputs` (of `level`) with `overlapping` (of `level + 1`) into new
/// tables of `level + 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub level: usize,
    pub inputs: Vec<u64>,
    pub overlapping: Vec<u64>,
    /// No level below `level + 1` holds a key in the task's range: tombstones can go.
    pub bottommost: bool,
    /// The largest key of the inputs, the level's next pointer.
    pub largest: Bytes,
}

impl Task {
    pub fn target_level(&self) -> usize {
        self.level + 1
    }

    /// A single file with nothing to merge under it moves down without being rewritten.
    pub fn is_move(&self) -> bool {
        self.level > 0 && self.inputs.len() == 1 && self.overlapping.is_empty()
    }
}

impl Policy {
    /// The policy a store's configuration asks for (the one place it is built).
    pub fn for_config(config: &StoreConfig) -> Self {
        Policy {
            l0_trigger: config.compaction_trigger,
            level1_bytes: config.level1_bytes(),
            level_ratio: LEVEL_RATIO,
        }
    }

    pub fn target_bytes(&self, level: usize) -> u64 {
        debug_assert!(level >= 1);
        let exponent = u32::try_from(level - 1).unwrap_or(u32::MAX);
        self.level1_bytes
            .saturating_mul(self.level_ratio.saturating_pow(exponent))
    }
}

fn overlaps(table: &TableSummary, smallest: &[u8], largest: &[u8]) -> bool {
    &table.smallest[..] <= largest && &table.largest[..] >= smallest
}

/// See the module documentation. `levels[0]` is newest first; deeper levels are sorted by key.
/// `pointers[level]` is the largest key of that level's last compaction.
pub fn choose(levels: &[Vec<TableSummary>], pointers: &[Option<Bytes>], policy: &Policy) -> Option<Task> {
    let last = levels.len().checked_sub(1)?;
    let mut best: Option<(f64, usize)> = None;
    for (level, tables) in levels.iter().enumerate().take(last) {
        let score = if level == 0 {
            tables.len() as f64 / policy.l0_trigger.max(1) as f64
        } else {
            tables.iter().map(|t| t.file_bytes).sum::<u64>() as f64 / policy.target_bytes(level) as f64
        };
        if score >= 1.0 && !tables.is_empty() && best.is_none_or(|(top, _)| score > top) {
            best = Some((score, level));
        }
    }
    let (_, level) = best?;
    let inputs: Vec<&TableSummary> = if level == 0 {
        levels[0].iter().collect()
    } else {
        let tables = &levels[level];
        let after = pointers.get(level).cloned().flatten();
        let pick = after
            .and_then(|pointer| tables.iter().find(|t| t.smallest > pointer))
            .unwrap_or(&tables[0]);
        vec![pick]
    };
    let smallest = inputs
        .iter()
        .map(|t| &t.smallest)
        .min()
        .expect("non-empty")
        .clone();
    let largest = inputs
        .iter()
        .map(|t| &t.largest)
        .max()
        .expect("non-empty")
        .clone();
    let overlapping: Vec<&TableSummary> = levels[level + 1]
        .iter()
        .filter(|t| overlaps(t, &smallest, &largest))
        .collect();
    // Overlapping tables may reach beyond the inputs; the output covers both.
    let range_smallest = overlapping
        .first()
        .map_or(&smallest, |t| (&t.smallest).min(&smallest));
    let range_largest = overlapping
        .last()
        .map_or(&largest, |t| (&t.largest).max(&largest));
    let bottommost = levels[level + 2..]
        .iter()
        .flatten()
        .all(|t| !overlaps(t, range_smallest, range_largest));
    Some(Task {
        level,
        inputs: inputs.iter().map(|t| t.number).collect(),
        overlapping: overlapping.iter().map(|t| t.number).collect(),
        bottommost,
        largest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        l0_trigger: 4,
        level1_bytes: 100,
        level_ratio: 10,
    };

    fn table(number: u64, file_bytes: u64, smallest: &str, largest: &str) -> TableSummary {
        TableSummary {
            number,
            file_bytes,
            smallest: Bytes::copy_from_slice(smallest.as_bytes()),
            largest: Bytes::copy_from_slice(largest.as_bytes()),
        }
    }

    fn levels(spec: Vec<Vec<TableSummary>>) -> Vec<Vec<TableSummary>> {
        let mut levels = spec;
        levels.resize(7, Vec::new());
        levels
    }

    #[test]
    fn nothing_to_do_below_every_threshold() {
        let tree = levels(vec![
            vec![
                table(9, 10, "a", "z"),
                table(8, 10, "a", "z"),
                table(7, 10, "a", "z"),
            ],
            vec![table(1, 90, "a", "m")],
        ]);
        assert_eq!(choose(&tree, &[], &POLICY), None);
        assert_eq!(choose(&[], &[], &POLICY), None);
    }

    #[test]
    fn level0_at_trigger_takes_every_file_and_the_overlapping_level1_files() {
        let tree = levels(vec![
            vec![
                table(9, 1, "c", "d"),
                table(8, 1, "e", "f"),
                table(7, 1, "c", "f"),
                table(6, 1, "d", "e"),
            ],
            vec![
                table(1, 10, "a", "b"),
                table(2, 10, "c", "c"),
                table(3, 10, "f", "g"),
                table(4, 10, "h", "i"),
            ],
        ]);
        let task = choose(&tree, &[], &POLICY).unwrap();
        assert_eq!(task.level, 0);
        assert_eq!(task.inputs, vec![9, 8, 7, 6]);
        assert_eq!(task.overlapping, vec![2, 3]);
        assert!(task.bottommost);
        assert!(!task.is_move());
    }

    #[test]
    fn the_fullest_level_wins_and_the_pointer_sweeps_its_files() {
        let tree = levels(vec![
            vec![table(9, 1, "a", "b")],
            vec![
                table(1, 60, "a", "c"),
                table(2, 60, "d", "f"),
                table(3, 60, "g", "i"),
            ],
            vec![table(4, 500, "a", "e")],
        ]);
        let task = choose(&tree, &[], &POLICY).unwrap();
        assert_eq!(
            (task.level, task.inputs.clone(), task.overlapping.clone()),
            (1, vec![1], vec![4])
        );
        let pointers = vec![None, Some(task.largest.clone())];
        let task = choose(&tree, &pointers, &POLICY).unwrap();
        assert_eq!(
            (task.inputs.clone(), task.overlapping.clone()),
            (vec![2], vec![4])
        );
        let pointers = vec![None, Some(Bytes::from_static(b"i"))];
        let task = choose(&tree, &pointers, &POLICY).unwrap();
        assert_eq!(task.inputs, vec![1], "the pointer wraps around");
    }

    #[test]
    fn a_file_with_nothing_below_is_moved() {
        let tree = levels(vec![
            vec![],
            vec![table(1, 200, "a", "c")],
            vec![table(4, 5, "x", "z")],
        ]);
        let task = choose(&tree, &[], &POLICY).unwrap();
        assert!(task.is_move());
        assert!(task.bottommost);
    }

    #[test]
    fn tombstones_stay_when_a_deeper_level_overlaps() {
        let tree = levels(vec![
            vec![table(9, 1, "a", "b"); 4],
            vec![table(1, 10, "a", "a")],
            vec![],
            vec![table(5, 10, "b", "b")],
        ]);
        let task = choose(&tree, &[], &POLICY).unwrap();
        assert_eq!(task.level, 0);
        assert!(!task.bottommost, "level 3 holds key b");
        let tree = levels(vec![
            vec![table(9, 1, "a", "b"); 4],
            vec![],
            vec![table(5, 10, "c", "d")],
        ]);
        assert!(choose(&tree, &[], &POLICY).unwrap().bottommost);
    }

    #[test]
    fn the_last_level_is_never_compacted() {
        let mut tree = levels(vec![]);
        tree[6] = vec![table(1, u64::MAX / 2, "a", "z")];
        assert_eq!(choose(&tree, &[], &POLICY), None);
    }

    #[test]
    fn level_targets_grow_by_the_ratio() {
        assert_eq!(POLICY.target_bytes(1), 100);
        assert_eq!(POLICY.target_bytes(3), 10_000);
        assert_eq!(POLICY.target_bytes(60), u64::MAX);
    }
}
