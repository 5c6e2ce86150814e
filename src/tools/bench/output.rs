//! Where a bench's result goes (a table it prints, `--json`, `--proof-dir`) and the
//! arithmetic every bench reports with.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// Where a result goes: a table (printed by the bench), `--json`, and `--proof-dir`.
pub(crate) struct Output {
    pub(crate) json: bool,
    pub(crate) proof_dir: Option<PathBuf>,
}

impl Output {
    /// Writes `value` to `<proof-dir>/<name>.json` if asked, prints it with `--json`.
    /// Returns whether the bench should print its table.
    pub(crate) fn emit(&self, name: &str, value: &serde_json::Value) -> anyhow::Result<bool> {
        if let Some(dir) = &self.proof_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating --proof-dir {}", dir.display()))?;
            let path = dir.join(format!("{name}.json"));
            let mut text = serde_json::to_string_pretty(value)?;
            text.push('\n');
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        if self.json {
            println!("{value}");
        }
        Ok(!self.json)
    }
}

/// The value at fraction `p` of `sorted` (nearest rank); 0 when empty.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Mean and p95 of `v`.
pub(crate) fn mean_and_p95(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    (mean, percentile(&v, 0.95))
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
