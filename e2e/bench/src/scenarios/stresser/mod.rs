//! The seeds' benchmark case: K clients each publish M messages to a topic only their own
//! subscriber listens to, and the per-client publish and receive rates are reported as fastest,
//! median and slowest — mqtt-stresser's figures, so results sit next to the seeds' tables.
//!
//! With `--stresser-bin` the real mqtt-stresser runs and its report is parsed; without it the
//! built-in workload does the same thing with rumqttc (and measures latency as well).

mod builtin;
mod external;

use crate::cli::StresserArgs;
use crate::measure::procfs::{ProcessProbe, Usage};
use crate::report::result::{Params, RunResult};

pub async fn run(args: StresserArgs) -> anyhow::Result<RunResult> {
    let probe = args
        .output
        .single_pid()?
        .map(ProcessProbe::new)
        .transpose()?;
    let before = probe.as_ref().map(ProcessProbe::sample).transpose()?;
    let started = std::time::Instant::now();
    let mut result = super::base_result(
        "stresser",
        &args.output,
        Params {
            qos: Some(args.qos),
            publishers: args.clients,
            subscribers: args.clients,
            clients: Some(args.clients),
            messages: Some(args.messages),
            ..Params::default()
        },
    );
    match &args.stresser_bin {
        Some(binary) => result.stresser = Some(external::run(binary, &args).await?),
        None => builtin::run(&args, &mut result).await?,
    }
    let after = probe.as_ref().map(ProcessProbe::sample).transpose()?;
    if let (Some(b), Some(a)) = (before, after) {
        result.broker_usage = Some(Usage::between(&b, &a, started.elapsed().as_secs_f64()));
    }
    result.bench_cpu_s = ProcessProbe::own()
        .sample()
        .map_or(0.0, |s| s.cpu_s + s.children_cpu_s);
    Ok(result)
}
