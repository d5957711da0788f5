//! Iteration progress on a terminal; silent when stderr is piped or redirected.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::kmeans::Progress;

pub struct Bar {
    bar: ProgressBar,
    runs: usize,
}

impl Bar {
    pub fn new(max_iter: usize, runs: usize) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let b =
                ProgressBar::with_draw_target(Some(max_iter as u64), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos}/{len} iterations  {msg}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b
        } else {
            ProgressBar::hidden()
        };
        Bar { bar, runs }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn iteration(&self, run: usize, iter: usize, inertia: f64, changed: u64) {
        if self.runs > 1 {
            self.bar
                .set_prefix(format!("run {}/{}", run + 1, self.runs));
        }
        self.bar.set_position(iter as u64);
        self.bar
            .set_message(format!("inertia {inertia:.6e}, {changed} labels changed"));
    }
}
