//! Progress bars on stderr (indicatif), hidden with `--quiet` or when stderr is not a terminal.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of one command.
pub struct Bars {
    multi: MultiProgress,
}

impl Bars {
    /// Bars drawn on stderr unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        let target = if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        Self { multi: MultiProgress::with_draw_target(target) }
    }

    /// A bar counting `total` items.
    pub fn counter(&self, total: u64, message: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template("{spinner:.green} {msg:<12} [{bar:30.cyan/blue}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// A byte-counting bar for a download.
    pub fn bytes(&self, total: Option<u64>, message: String) -> ProgressBar {
        let bar = self.multi.add(total.map_or_else(ProgressBar::new_spinner, ProgressBar::new));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.green} {msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(message);
        bar
    }

    /// A spinner for a step of unknown length.
    pub fn spinner(&self, message: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}

/// Shows a download as a byte bar.
pub struct DownloadBar<'a> {
    bars: &'a Bars,
    bar: std::sync::Mutex<Option<ProgressBar>>,
}

impl<'a> DownloadBar<'a> {
    /// A download bar owned by `bars`.
    pub fn new(bars: &'a Bars) -> Self {
        Self { bars, bar: std::sync::Mutex::new(None) }
    }
}

impl lightops_objstore::DownloadProgress for DownloadBar<'_> {
    fn start(&self, url: &str, total: Option<u64>) {
        let name = url.rsplit('/').next().unwrap_or(url).to_owned();
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(self.bars.bytes(total, format!("download {name}")));
        }
    }
    fn advance(&self, bytes: u64) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish_and_clear();
        }
    }
}
