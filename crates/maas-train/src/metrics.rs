//! Evaluation metrics, computed as scikit-learn defines them.
//!
//! Classification: accuracy, per-class precision/recall/F1 with their macro and support-weighted
//! averages, the confusion matrix, and ROC-AUC for binary problems (ties share their rank, as the
//! Mann–Whitney statistic does). Regression: MSE, RMSE, MAE and R².

use serde::Serialize;

/// Precision, recall and F1 of one class (or an average of them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prf {
    /// Of the predictions of this class, the share that were right (0 when none were made).
    pub precision: f64,
    /// Of the true members of this class, the share found (0 when there are none).
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// True members of the class (for an average: all samples).
    pub support: usize,
}

/// Everything a classification evaluation reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// Share of samples predicted right.
    pub accuracy: f64,
    /// Per class, in class-index order.
    pub per_class: Vec<Prf>,
    /// Unweighted mean over classes.
    pub macro_avg: Prf,
    /// Mean over classes weighted by support.
    pub weighted_avg: Prf,
    /// `matrix[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Area under the ROC curve, for two classes when scores are given and both classes occur.
    pub roc_auc: Option<f64>,
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Classification metrics for labels `0..classes`. `positive_scores`, when given, are the
/// model's scores for class 1 (binary problems), for ROC-AUC.
///
/// Panics if `truth` and `predicted` differ in length or a label is `>= classes`; callers
/// validate their data first.
pub fn classification(
    truth: &[usize],
    predicted: &[usize],
    classes: usize,
    positive_scores: Option<&[f64]>,
) -> Classification {
    assert_eq!(
        truth.len(),
        predicted.len(),
        "truth and predictions differ in length"
    );
    let mut confusion = vec![vec![0usize; classes]; classes];
    for (t, p) in truth.iter().zip(predicted) {
        confusion[*t][*p] += 1;
    }
    let n = truth.len();
    let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
    let per_class: Vec<Prf> = (0..classes)
        .map(|c| {
            let tp = confusion[c][c];
            let predicted_c: usize = (0..classes).map(|t| confusion[t][c]).sum();
            let support: usize = confusion[c].iter().sum();
            let precision = ratio(tp, predicted_c);
            let recall = ratio(tp, support);
            Prf {
                precision,
                recall,
                f1: f1(precision, recall),
                support,
            }
        })
        .collect();
    let mean = |weight: &dyn Fn(&Prf) -> f64, total: f64| -> Prf {
        let avg = |field: &dyn Fn(&Prf) -> f64| {
            if total == 0.0 {
                0.0
            } else {
                per_class.iter().map(|p| field(p) * weight(p)).sum::<f64>() / total
            }
        };
        Prf {
            precision: avg(&|p| p.precision),
            recall: avg(&|p| p.recall),
            f1: avg(&|p| p.f1),
            support: n,
        }
    };
    let macro_avg = mean(&|_| 1.0, classes as f64);
    let weighted_avg = mean(&|p| p.support as f64, n as f64);
    let roc_auc = match positive_scores {
        Some(scores) if classes == 2 => roc_auc(truth, scores),
        _ => None,
    };
    Classification {
        accuracy: ratio(correct, n),
        per_class,
        macro_avg,
        weighted_avg,
        confusion,
        roc_auc,
    }
}

/// ROC-AUC of `scores` for the positive class 1: the chance that a random positive scores above
/// a random negative, ties counting half. None unless both classes occur.
pub fn roc_auc(truth: &[usize], scores: &[f64]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Average ranks (1-based) over runs of equal scores.
    let mut ranks = vec![0f64; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = rank;
        }
        i = j + 1;
    }
    let positives = truth.iter().filter(|t| **t == 1).count();
    let negatives = truth.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let rank_sum: f64 = truth
        .iter()
        .zip(&ranks)
        .filter(|(t, _)| **t == 1)
        .map(|(_, r)| r)
        .sum();
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Everything a regression evaluation reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Regression {
    /// Mean squared error.
    pub mse: f64,
    /// Its square root.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Coefficient of determination: 1 - SSE/SST (0 when the truth is constant and matched,
    /// as scikit-learn reports a perfect constant fit as 1 and an imperfect one as 0).
    pub r2: f64,
}

/// Regression metrics. Panics if the slices differ in length or are empty.
pub fn regression(truth: &[f64], predicted: &[f64]) -> Regression {
    assert_eq!(
        truth.len(),
        predicted.len(),
        "truth and predictions differ in length"
    );
    assert!(!truth.is_empty(), "no samples");
    let n = truth.len() as f64;
    let sse: f64 = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).powi(2))
        .sum();
    let mae = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).abs())
        .sum::<f64>()
        / n;
    let mean = truth.iter().sum::<f64>() / n;
    let sst: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    let r2 = if sst == 0.0 {
        if sse == 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        1.0 - sse / sst
    };
    let mse = sse / n;
    Regression {
        mse,
        rmse: mse.sqrt(),
        mae,
        r2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    /// Three classes, ten samples, worked by hand:
    /// truth     0 0 0 0 1 1 1 2 2 2
    /// predicted 0 0 1 2 1 1 0 2 2 1
    #[test]
    fn multiclass_metrics_match_the_hand_computed_values() {
        let truth = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2];
        let predicted = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1];
        let m = classification(&truth, &predicted, 3, None);
        assert_eq!(
            m.confusion,
            vec![vec![2, 1, 1], vec![1, 2, 0], vec![0, 1, 2]]
        );
        close(m.accuracy, 0.6);
        // Class 0: tp 2, predicted 3, support 4 -> p 2/3, r 1/2, f1 4/7.
        close(m.per_class[0].precision, 2.0 / 3.0);
        close(m.per_class[0].recall, 0.5);
        close(m.per_class[0].f1, 4.0 / 7.0);
        // Class 1: tp 2, predicted 4, support 3 -> p 1/2, r 2/3, f1 4/7.
        close(m.per_class[1].precision, 0.5);
        close(m.per_class[1].recall, 2.0 / 3.0);
        close(m.per_class[1].f1, 4.0 / 7.0);
        // Class 2: tp 2, predicted 3, support 3 -> p 2/3, r 2/3, f1 2/3.
        close(m.per_class[2].f1, 2.0 / 3.0);
        close(m.macro_avg.precision, (2.0 / 3.0 + 0.5 + 2.0 / 3.0) / 3.0);
        close(m.macro_avg.recall, (0.5 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0);
        close(m.macro_avg.f1, (4.0 / 7.0 + 4.0 / 7.0 + 2.0 / 3.0) / 3.0);
        close(m.weighted_avg.recall, 0.6); // weighted recall is accuracy
        close(
            m.weighted_avg.f1,
            (4.0 * 4.0 / 7.0 + 3.0 * 4.0 / 7.0 + 3.0 * 2.0 / 3.0) / 10.0,
        );
        assert_eq!(m.macro_avg.support, 10);
        assert_eq!(m.roc_auc, None);
    }

    #[test]
    fn a_class_never_predicted_scores_zero_not_nan() {
        let m = classification(&[0, 1, 1], &[1, 1, 1], 2, None);
        assert_eq!(m.per_class[0].precision, 0.0);
        assert_eq!(m.per_class[0].f1, 0.0);
        close(m.per_class[1].precision, 2.0 / 3.0);
    }

    /// Positives score 0.8, 0.4, 0.35; negatives 0.1, 0.4, 0.3. Of the 9 pairs a positive wins
    /// 7, ties 1 (0.4 vs 0.4) and loses 1 (0.35 < 0.4): AUC = (7 + 0.5) / 9.
    #[test]
    fn roc_auc_counts_wins_and_half_ties() {
        let truth = [1, 1, 1, 0, 0, 0];
        let scores = [0.8, 0.4, 0.35, 0.1, 0.4, 0.3];
        close(roc_auc(&truth, &scores).unwrap(), 7.5 / 9.0);
        let m = classification(&truth, &[1, 1, 1, 0, 1, 0], 2, Some(&scores));
        close(m.roc_auc.unwrap(), 7.5 / 9.0);
        assert_eq!(roc_auc(&[1, 1], &[0.2, 0.9]), None);
    }

    /// truth 3, -0.5, 2, 7; predicted 2.5, 0, 2, 8: errors 0.5, -0.5, 0, -1.
    /// SSE 1.5, MSE 0.375, MAE 0.5; mean 2.875, SST 29.1875; R² = 1 - 1.5/29.1875.
    #[test]
    fn regression_metrics_match_the_hand_computed_values() {
        let m = regression(&[3.0, -0.5, 2.0, 7.0], &[2.5, 0.0, 2.0, 8.0]);
        close(m.mse, 0.375);
        close(m.rmse, 0.375f64.sqrt());
        close(m.mae, 0.5);
        close(m.r2, 1.0 - 1.5 / 29.1875);
        assert_eq!(regression(&[2.0, 2.0], &[2.0, 2.0]).r2, 1.0);
        assert_eq!(regression(&[2.0, 2.0], &[1.0, 2.0]).r2, 0.0);
    }
}
