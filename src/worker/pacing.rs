//! Pacing a batch to Exchange's cmdlet budget (issue 35): each account reserves the cmdlets
//! of the path the directory predicts (`plan::seen`, `Template::expected_cmdlets`), not the
//! most the template may run, and a batch whose reservation would not fit the window is run
//! in parts that do. An account whose path changed meanwhile runs more than it reserved;
//! its grant settles what really ran (`CmdletGrant::settle`), so the window still counts it.

use super::{Prepared, plan};
use crate::exchange::Template;

impl Prepared {
    /// The cmdlets this job's account is expected to run: on the path AD predicts, or the
    /// most it may when AD was not read (no domain controller configured).
    pub(super) fn expected_cmdlets(&self, template: Template) -> u32 {
        let Some(state) = &self.before else {
            return template.max_cmdlets(&self.data);
        };
        let seen = state
            .account
            .as_ref()
            .map(|a| plan::seen(a, self.wanted()))
            .unwrap_or_default();
        template.expected_cmdlets(&self.data, &seen)
    }
}

/// `items` in runs, in order, each costing at most `max` with the `session`'s cmdlets
/// (one account alone however much it costs); one run when `max` is `None` (no budget),
/// none when there are no items.
pub(super) fn runs<T>(
    items: Vec<T>,
    cost: impl Fn(&T) -> u32,
    session: u32,
    max: Option<u32>,
) -> Vec<Vec<T>> {
    let Some(max) = max.filter(|_| !items.is_empty()) else {
        return if items.is_empty() {
            Vec::new()
        } else {
            vec![items]
        };
    };
    let mut runs: Vec<Vec<T>> = Vec::new();
    let mut spent = 0;
    for item in items {
        let c = cost(&item);
        match runs.last_mut() {
            Some(run) if spent + c <= max => {
                spent += c;
                run.push(item);
            }
            _ => {
                spent = session + c;
                runs.push(vec![item]);
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn a_batch_is_split_where_its_expected_cmdlets_would_overflow_the_window() {
        // 20 new joiners (1 each) and a session of 2 fit a window of 40 whole.
        let joiners = vec![1u32; 20];
        assert_eq!(runs(joiners, |c| *c, 2, Some(40)).len(), 1);
        // 20 leavers (2 each): 2 + 19 × 2 = 40, then one more run.
        let leavers = vec![2u32; 20];
        let split = runs(leavers, |c| *c, 2, Some(40));
        assert_eq!(split.iter().map(Vec::len).collect::<Vec<_>>(), [19, 1]);
        // Mixed costs keep their order; an account costing more than the window runs alone.
        let mixed = vec![5, 5, 30, 5, 50, 1];
        let split = runs(mixed, |c| *c, 2, Some(40));
        assert_eq!(split, [vec![5, 5], vec![30, 5], vec![50], vec![1]]);
        // No budget: one run, whatever it costs; nothing to run: no run, budget or not.
        assert_eq!(runs(vec![5u32; 100], |c| *c, 2, None).len(), 1);
        assert!(runs(Vec::<u32>::new(), |c| *c, 2, None).is_empty());
        assert!(runs(Vec::<u32>::new(), |c| *c, 2, Some(40)).is_empty());
    }
}
