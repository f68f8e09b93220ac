//! Scoring a generative model's unsupervised categories against real labels.

use anyhow::{bail, Result};
use pathfinding::prelude::{kuhn_munkres, Matrix};

/// `confusion[c][y]`: how many examples put in category `c` have label `y`.
pub fn confusion_matrix(
    categories: &[u32],
    labels: &[u8],
    k: usize,
    classes: usize,
) -> Result<Vec<Vec<u64>>> {
    if categories.len() != labels.len() {
        bail!(
            "{} predictions for {} labels",
            categories.len(),
            labels.len()
        )
    }
    let mut m = vec![vec![0u64; classes]; k];
    for (&c, &y) in categories.iter().zip(labels) {
        if c as usize >= k || y as usize >= classes {
            bail!("category {c} or label {y} out of range ({k} categories, {classes} classes)")
        }
        m[c as usize][y as usize] += 1;
    }
    Ok(m)
}

/// The one-to-one assignment of categories to classes that agrees with the most
/// examples (the Hungarian algorithm): `mapping[c]` is the class of category `c`, or
/// `None` when there are more categories than classes and `c` is left over.
pub fn best_assignment(confusion: &[Vec<u64>]) -> Result<Vec<Option<usize>>> {
    let k = confusion.len();
    let classes = confusion.first().map_or(0, Vec::len);
    if k == 0 || classes == 0 || confusion.iter().any(|r| r.len() != classes) {
        bail!("the confusion matrix must be a non-empty rectangle")
    }
    let weights = |r: usize, c: usize| confusion[r][c] as i64;
    if k <= classes {
        let m = Matrix::from_fn(k, classes, |(r, c)| weights(r, c));
        let (_, cols) = kuhn_munkres(&m);
        Ok(cols.into_iter().map(Some).collect())
    } else {
        let m = Matrix::from_fn(classes, k, |(y, c)| weights(c, y));
        let (_, cats) = kuhn_munkres(&m);
        let mut mapping = vec![None; k];
        for (y, c) in cats.into_iter().enumerate() {
            mapping[c] = Some(y);
        }
        Ok(mapping)
    }
}

/// Fraction of examples whose category maps to their label under `mapping`.
pub fn matched_accuracy(confusion: &[Vec<u64>], mapping: &[Option<usize>]) -> f64 {
    let total: u64 = confusion.iter().flatten().sum();
    let hits: u64 = confusion
        .iter()
        .zip(mapping)
        .filter_map(|(row, m)| m.map(|y| row[y]))
        .sum();
    hits as f64 / total.max(1) as f64
}

/// How well categories found without labels classify labelled data: the confusion
/// matrix, the best one-to-one mapping of categories to labels (Hungarian algorithm),
/// and the accuracy under it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CodeEval {
    /// Examples scored.
    pub n: usize,
    /// Fraction whose category maps to their label under the best one-to-one mapping.
    pub accuracy: f64,
    /// `confusion[c][y]`: examples of label `y` put in category `c`.
    pub confusion: Vec<Vec<u64>>,
    /// `category_to_digit[c]`, from the Hungarian algorithm on the confusion matrix.
    pub category_to_digit: Vec<Option<usize>>,
}

impl CodeEval {
    /// Scores `categories` (one of `k` per example) against `labels` (one of `classes`).
    pub fn new(categories: &[u32], labels: &[u8], k: usize, classes: usize) -> Result<Self> {
        let confusion = confusion_matrix(categories, labels, k, classes)?;
        let category_to_digit = best_assignment(&confusion)?;
        let accuracy = matched_accuracy(&confusion, &category_to_digit);
        Ok(Self {
            n: labels.len(),
            accuracy,
            confusion,
            category_to_digit,
        })
    }

    /// The category mapped to `digit`, if one is.
    pub fn category_of(&self, digit: usize) -> Option<u32> {
        self.category_to_digit
            .iter()
            .position(|m| *m == Some(digit))
            .map(|c| c as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hungarian_beats_greedy_on_a_hand_made_matrix() {
        // Greedy (largest cell first) takes (0,0)=9 and then (1,1)=1: 10 hits. The
        // optimum pairs 0->1 and 1->0: 8 + 7 = 15.
        let conf = vec![vec![9, 8], vec![7, 1]];
        let mapping = best_assignment(&conf).unwrap();
        assert_eq!(mapping, vec![Some(1), Some(0)]);
        assert!((matched_accuracy(&conf, &mapping) - 15.0 / 25.0).abs() < 1e-12);
    }

    #[test]
    fn permuted_identity_is_recovered() {
        let perm = [3usize, 0, 2, 1];
        let mut conf = vec![vec![1u64; 4]; 4];
        for (c, &y) in perm.iter().enumerate() {
            conf[c][y] = 50;
        }
        let mapping = best_assignment(&conf).unwrap();
        assert_eq!(mapping, perm.iter().map(|&y| Some(y)).collect::<Vec<_>>());
    }

    #[test]
    fn more_categories_than_classes_leaves_some_unmatched() {
        let conf = vec![vec![5, 0], vec![0, 5], vec![3, 3]];
        let mapping = best_assignment(&conf).unwrap();
        assert_eq!(mapping, vec![Some(0), Some(1), None]);
        assert!((matched_accuracy(&conf, &mapping) - 10.0 / 16.0).abs() < 1e-12);
    }

    #[test]
    fn confusion_counts_and_checks() {
        let m = confusion_matrix(&[0, 1, 1], &[2, 0, 0], 2, 3).unwrap();
        assert_eq!(m, vec![vec![0, 0, 1], vec![2, 0, 0]]);
        assert!(confusion_matrix(&[0], &[1, 2], 2, 3).is_err());
        assert!(confusion_matrix(&[5], &[1], 2, 3).is_err());
        assert!(best_assignment(&[]).is_err());
    }
}
