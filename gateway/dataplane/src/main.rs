//! `lienthong-gateway --config FILE`: the compiled gateway's composition root.
//!
//! A configuration or start-up problem is one line on stderr and exit code 2; SIGTERM or
//! SIGINT drains the gateway (`proxy::serve`) and stops it with exit code 0.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use lienthong_dataplane::config::Config;
use lienthong_dataplane::proxy::{serve, Gateway};
use lienthong_dataplane::{log, metrics};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: lienthong-gateway --config FILE";

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("lienthong-gateway: {problem}");
            ExitCode::from(2)
        }
    }
}

fn run(arguments: Vec<OsString>) -> Result<(), String> {
    let path = match <[OsString; 2]>::try_from(arguments) {
        Ok([flag, path]) if flag == "--config" => PathBuf::from(path),
        _ => return Err(USAGE.to_owned()),
    };
    let config = Config::load(&path).map_err(|error| error.to_string())?;
    let gateway = Gateway::from_config(&config).map_err(|error| error.to_string())?;
    let auditor = gateway.auditor();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    runtime.block_on(async {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|error| format!("cannot listen on {}: {error}", config.listen))?;
        if let Some(address) = config.metrics_listen {
            let endpoint = TcpListener::bind(address)
                .await
                .map_err(|error| format!("cannot serve metrics on {address}: {error}"))?;
            tokio::spawn(metrics::serve(gateway.metrics(), endpoint));
            log::event(
                "info",
                "metrics_started",
                serde_json::json!({"address": address.to_string()}),
            );
        }
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|error| format!("cannot handle SIGTERM: {error}"))?;
        let stop = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        log::event(
            "info",
            "server_started",
            serde_json::json!({"server": "gateway", "port": config.listen.port()}),
        );
        serve(gateway, listener, stop).await;
        Ok::<(), String>(())
    })?;
    // Whatever was appended is durable; a last checkpoint signs it.
    auditor
        .store()
        .close()
        .map(drop)
        .map_err(|error| format!("closing the audit log: {error}"))
}
