//! `lightops up`: the four services in this process on embedded defaults, until Ctrl-C.

use anyhow::Context;

use crate::cli::{Global, UpArgs};
use crate::stack::{Ports, Stack};

pub fn run(global: &Global, args: UpArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let ports =
            Ports { registry: args.registry, trainer: args.trainer, predictor: args.predictor, monitor: args.monitor };
        let stack = Stack::start(&global.home, ports, None).await?;
        println!("registry  {}   lightops models …, lightops runs … (--registry)", stack.registry);
        println!("trainer   {}   lightops jobs submit … (--trainer)", stack.trainer);
        println!(
            "predictor {}   POST {}/predict, gRPC lightops.predictor.v1 and OIP v2",
            stack.predictor, stack.predictor
        );
        println!("monitor   {}   lightops monitor report (--monitor)", stack.monitor);
        println!("state in {}; Ctrl-C stops everything", global.home.display());
        crate::serve::shutdown_signal().await;
        eprintln!("stopping…");
        stack.stop().await?;
        eprintln!("stopped");
        Ok(())
    })
}
