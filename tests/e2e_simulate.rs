//! End-to-end simulator: a daemon on real API servers writes its trace while the
//! primary's API server is stopped until it promotes; `kube-failover simulate --trace`
//! replays that trace and predicts the promotion in the tick the daemon took it.

use crate::support;

use std::time::Duration;
use support::*;

#[tokio::test]
async fn a_recorded_outage_replayed_predicts_the_promotion_tick_the_daemon_took() {
    let pair = pair().await;
    let opts = DaemonOpts {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(400),
        ..DaemonOpts::default()
    };
    let dir = pair.primary.dir().to_path_buf();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let trace = dir.join(format!("trace-{}.jsonl", admin.port()));
    let toml = config_toml(&pair, &opts, admin).replacen(
        "shutdown_timeout = \"5s\"\n",
        &format!(
            "shutdown_timeout = \"5s\"\ntrace_file = \"{}\"\n",
            trace.display()
        ),
        1,
    );
    assert!(toml.contains("trace_file"), "{toml}");
    let config = dir.join(format!("kube-failover-{}.toml", admin.port()));
    std::fs::write(&config, toml).expect("write the config");
    let mut d = Daemon::start_with_config(&config, admin, &dir).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    // Past the startup grace, with healthy ticks in the trace.
    tokio::time::sleep(Duration::from_secs(3)).await;

    pair.primary.stop_apiserver().await.expect("stop primary");
    // The tick that started the promotion, as /status says: its state changed to
    // `promoting` at that tick's wall time.
    let since = std::cell::Cell::new(None);
    let found = wait_for(Duration::from_secs(30), Duration::from_millis(40), || {
        let (d, since) = (&d, &since);
        async move {
            match d.group().await {
                Some(g) if g.state == "promoting" => {
                    since.set(Some(g.since_unix));
                    true
                }
                Some(g) if g.state == "promoted" => true,
                _ => false,
            }
        }
    })
    .await;
    assert!(found.is_some(), "no promotion\n{}", d.log_text());
    let promoting_since = since.get();
    eprintln!("/status: promoting since {promoting_since:?}");
    d.wait_state("promoted", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    d.terminate().await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-failover"))
        .arg("simulate")
        .arg("--config")
        .arg(&config)
        .arg("--trace")
        .arg(&trace)
        .arg("--json")
        .output()
        .expect("run simulate");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let timeline: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let predicted = timeline["promotion_at"]
        .as_u64()
        .expect("a predicted promotion");
    let recorded = timeline["recorded_promotion_at"]
        .as_u64()
        .expect("the daemon's promotion in the trace");
    assert_eq!(
        predicted,
        recorded,
        "{}",
        serde_json::to_string_pretty(&timeline["events"]).unwrap()
    );
    assert_eq!(timeline["dropped_lines"], 0);
    assert_eq!(timeline["actions_carried_out"], false);

    // The same tick as /status named, when the poll saw `promoting`.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .expect("the trace")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    if let Some(since) = promoting_since {
        let tick = lines
            .iter()
            .position(|l| (l["observation"]["wall_unix"].as_f64().unwrap() - since).abs() < 1e-6)
            .expect("the promoting tick is in the trace");
        assert_eq!(tick as u64, predicted);
    }
    // The prediction is at least `failure_threshold` ticks into the outage: the ticks
    // before it saw the primary's API fail.
    let failing = |l: &serde_json::Value| l["observation"]["primary"]["api"]["reason"] != "ok";
    let predicted = predicted as usize;
    assert!(
        lines[predicted + 1 - 3..=predicted].iter().all(failing),
        "the three ticks up to the promotion saw the API fail"
    );

    // The human form says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-failover"))
        .args(["simulate", "--config"])
        .arg(&config)
        .arg("--trace")
        .arg(&trace)
        .output()
        .expect("run simulate");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        text.contains(&format!("promotion: tick {predicted};")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "recorded: the daemon wrote its promotion in tick {predicted}"
        )),
        "{text}"
    );
}
