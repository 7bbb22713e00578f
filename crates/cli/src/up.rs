//! `lightops up`: the four services in this process on embedded defaults, until Ctrl-C.

use anyhow::Context;

use crate::cli::{Global, UpArgs};
use crate::stack::{Ports, Stack};

pub fn run(global: &Global, args: UpArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let ports =
            Ports { registry: args.registry, trainer: args.trainer, predictor: args.predictor, monitor: args.monitor };
        // Installed before anything starts, so Ctrl-C during start-up still stops cleanly.
        let stop = crate::serve::shutdown_signal();
        let stack = Stack::start(&global.home, ports, None).await?;
        // Where things listen goes to stdout; if nobody reads it any more (`lightops up | head`),
        // the services keep serving instead of the print panicking on a broken pipe.
        let banner = format!(
            "registry  {r}   lightops models …, lightops runs … (--registry)\n\
             trainer   {t}   lightops jobs submit … (--trainer)\n\
             predictor {p}   POST {p}/predict, gRPC lightops.predictor.v1 and OIP v2\n\
             monitor   {m}   lightops monitor report (--monitor)\n\
             state in {home}; Ctrl-C stops everything\n",
            r = stack.registry,
            t = stack.trainer,
            p = stack.predictor,
            m = stack.monitor,
            home = global.home.display()
        );
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
        }
        stop.await;
        eprintln!("stopping…");
        stack.stop().await?;
        eprintln!("stopped");
        Ok(())
    })
}
