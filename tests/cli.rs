//! The `kube-failover` binary as an operator uses it: exit codes, messages naming the
//! key path, the resolved configuration, and `status` against a missing and a fake daemon.
//! No cluster is needed.

use crate::support::fixtures;

use fixtures::KUBECONFIG;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::LazyLock;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_kube-failover");

/// A valid configuration; `{kc}` becomes the kubeconfig path.
static GOOD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "[daemon]\nprobe_interval = \"2000ms\"\nprobe_timeout = \"1s\"\n\n{}",
        fixtures::group_in_kubeconfig(1)
    )
});

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("clusters.kubeconfig"), KUBECONFIG).expect("kubeconfig");
        Fixture { dir }
    }

    fn config(&self, text: &str) -> PathBuf {
        let kc = self.dir.path().join("clusters.kubeconfig");
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, text.replace("{kc}", &kc.display().to_string())).expect("config");
        path
    }
}

/// Runs the binary with no `KUBE_FAILOVER…` variables from the test's own environment.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_in(None, args, env)
}

/// [`run`] in the working directory `dir`.
fn run_in(dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    for (key, _) in std::env::vars() {
        if key.starts_with("KUBE_FAILOVER") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run kube-failover")
}

fn check_config(path: &Path, env: &[(&str, &str)]) -> Output {
    run(&["check-config", "--config", path.to_str().unwrap()], env)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_and_help() {
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let version = stdout(&out);
    let rest = version
        .trim()
        .strip_prefix(&format!(
            "kube-failover {} (revision ",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|| panic!("{version}"));
    let (revision, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("{version}"));
    // Built from this work tree: the commit checked out (build.rs follows HEAD).
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(revision, head, "{version}"),
        None => assert_eq!(revision, "unknown", "{version}"),
    }
    assert!(is_date(date), "{version}");
    assert_eq!(stdout(&run(&["-V"], &[])), version);
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for line in [
        "0  success",
        "1  runtime error",
        "2  invalid configuration",
        "3  the daemon could not be reached",
    ] {
        assert!(help.contains(line), "{help}");
    }
    for cmd in ["run", "check-config", "status"] {
        assert!(help.contains(cmd), "{help}");
    }
}

/// `YYYY-MM-DD`.
fn is_date(s: &str) -> bool {
    s.len() == 10
        && s.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// build.rs compiled on its own and run where cargo would run it, with `env`: the
/// `cargo:rustc-env` values it prints.
fn build_script(dir: &Path, env: &[(&str, &str)]) -> Vec<(String, String)> {
    let exe = dir.join("build-script");
    if !exe.exists() {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
        let out = Command::new(rustc)
            .args(["--edition", "2024", "-o"])
            .arg(&exe)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("build.rs"))
            .output()
            .expect("rustc");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let mut cmd = Command::new(&exe);
    cmd.current_dir(dir)
        .env_remove("KUBE_FAILOVER_REVISION")
        .env_remove("SOURCE_DATE_EPOCH")
        // No repository above the folder: git stops at it (a source tarball).
        .env("GIT_CEILING_DIRECTORIES", dir.parent().expect("parent"));
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("build script");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("cargo:rustc-env="))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn build_script_stamps_revision_and_date_and_falls_back_outside_git() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("src");
    std::fs::create_dir(&dir).expect("mkdir");
    let pairs = |env: &[(&str, &str)]| build_script(&dir, env);
    let get = |pairs: &[(String, String)], key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key} not set: {pairs:?}"))
    };
    // A tarball: no git work tree, no override.
    let plain = pairs(&[]);
    assert_eq!(get(&plain, "KUBE_FAILOVER_REVISION"), "unknown");
    assert!(
        is_date(&get(&plain, "KUBE_FAILOVER_BUILD_DATE")),
        "{plain:?}"
    );
    // The image build passes the revision in; SOURCE_DATE_EPOCH fixes the date.
    for (epoch, date) in [
        ("0", "1970-01-01"),
        ("951782400", "2000-02-29"),
        ("1700000000", "2023-11-14"),
        ("4107542399", "2100-02-28"),
    ] {
        let set = pairs(&[
            ("KUBE_FAILOVER_REVISION", "0123abc"),
            ("SOURCE_DATE_EPOCH", epoch),
        ]);
        assert_eq!(get(&set, "KUBE_FAILOVER_REVISION"), "0123abc");
        assert_eq!(get(&set, "KUBE_FAILOVER_BUILD_DATE"), date, "epoch {epoch}");
    }
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_definition() {
    let commands = [
        "run",
        "check-config",
        "status",
        "pause",
        "resume",
        "promote",
        "failback",
        "fence",
        "history",
        "guard",
        "simulate",
        "completions",
        "man",
    ];
    let out = run(&["completions", "bash"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("kube-failover.bash");
    std::fs::write(&script, &out.stdout).expect("script");
    // What bash offers after `kube-failover ` and after `kube-failover status --`.
    let complete = |words: &[&str]| -> Vec<String> {
        let cword = words.len() - 1;
        let prev = words[cword - 1];
        let shell = format!(
            "source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; _kube__failover kube-failover '{}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words[cword],
        );
        let out = Command::new("bash")
            .args(["-c", &shell])
            .output()
            .expect("bash");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).lines().map(str::to_string).collect()
    };
    let offered = complete(&["kube-failover", ""]);
    for cmd in commands {
        assert!(
            offered.iter().any(|o| o == cmd),
            "{cmd} not offered: {offered:?}"
        );
    }
    let offered = complete(&["kube-failover", "status", "--"]);
    assert!(offered.iter().any(|o| o == "--json"), "{offered:?}");
    assert!(offered.iter().any(|o| o == "--addr"), "{offered:?}");
    let offered = complete(&["kube-failover", "check-config", "--c"]);
    assert_eq!(offered, ["--config"]);
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = run(&["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("check-config"), "{shell}");
    }
    let out = run(&["completions", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tcsh"), "{}", stderr(&out));

    let out = run(&["man"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.starts_with(".ie"), "{page}");
    assert!(page.contains(".TH kube-failover 1"), "{page}");
    for cmd in commands {
        assert!(
            page.contains(&format!("kube\\-failover\\-{}(1)", cmd.replace('-', "\\-"))),
            "{cmd} missing: {page}"
        );
    }
    let into = dir.path().join("man1");
    let out = run(&["man", "--dir", into.to_str().expect("utf-8")], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = std::fs::read_to_string(into.join("kube-failover-status.1")).expect("status page");
    assert!(status.contains(".TH kube-failover-status 1"), "{status}");
    assert!(status.contains("\\-\\-json"), "{status}");
    assert!(into.join("kube-failover.1").exists());
}

#[test]
fn usage_errors_exit_2() {
    let out = run(&["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(&["status", "--port", "1"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn check_config_prints_the_resolved_configuration() {
    let f = Fixture::new();
    let path = f.config(&GOOD);
    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "probe_interval = \"2s\"",
        "probe_timeout = \"1s\"",
        "mode = \"auto\"",
        "cooldown = \"10m\"",
        "promotion_timeout = \"2m\"",
        "success_threshold = 1",
        "replicas = 1",
        "record_name = \"kube-failover-env0\"",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // The printed configuration is itself a valid configuration.
    let again = f.config(&text);
    let out = check_config(&again, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().skip(1).collect::<Vec<_>>(),
        text.lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn check_config_applies_environment_overrides() {
    let f = Fixture::new();
    let path = f.config(&GOOD);
    let out = check_config(
        &path,
        &[
            ("KUBE_FAILOVER__DAEMON__MODE", "observe"),
            ("KUBE_FAILOVER__DAEMON__PROBE_INTERVAL", "4s"),
            ("KUBE_FAILOVER__GROUPS__0__POLICY__QUORUM", "2"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("mode = \"observe\""), "{text}");
    assert!(text.contains("probe_interval = \"4s\""), "{text}");
    assert!(text.contains("quorum = 2"), "{text}");
}

/// Each kind of bad configuration exits 2 with a message naming the key path.
#[test]
fn check_config_rejects_bad_configurations_naming_the_key() {
    let f = Fixture::new();
    let cases: &[(&str, String, &str)] = &[
        (
            "unknown key",
            GOOD.replace("failure_threshold = 3", "failure_treshold = 3"),
            "groups[env0].policy.failure_treshold: unknown field",
        ),
        (
            "malformed duration",
            GOOD.replace("\"2000ms\"", "\"2 fortnights\""),
            "daemon.probe_interval: invalid value",
        ),
        (
            "interval above its bound",
            GOOD.replace("\"2000ms\"", "\"2h\""),
            "daemon.probe_interval: must be at most 1h (got 2h)",
        ),
        (
            "cooldown above its bound",
            GOOD.replace("failure_threshold = 3", "cooldown = \"90days\""),
            "groups[env0].policy.cooldown: must be at most 30days",
        ),
        (
            "zero threshold",
            GOOD.replace("failure_threshold = 3", "failure_threshold = 0"),
            "groups[env0].policy.failure_threshold: must be at least 1",
        ),
        (
            "negative threshold",
            GOOD.replace("failure_threshold = 3", "failure_threshold = -2"),
            "groups[env0].policy.failure_threshold: ",
        ),
        (
            "timeout not below interval",
            GOOD.replace("probe_timeout = \"1s\"", "probe_timeout = \"2s\""),
            "daemon.probe_timeout: must be below daemon.probe_interval",
        ),
        (
            "quorum above the signals",
            GOOD.replace("failure_threshold = 3", "quorum = 4"),
            "groups[env0].policy.quorum: 4 is more than the 3 primary signal(s)",
        ),
        (
            "duplicate group names",
            format!("{}\n{}", *GOOD, &GOOD[GOOD.find("[[groups]]").unwrap()..]),
            "groups[1].name: duplicate group name \"env0\"",
        ),
        (
            "same cluster and namespace",
            GOOD.replace("context = \"standby\"", "context = \"primary\""),
            "groups[env0].standby: is the same cluster and namespace",
        ),
        (
            "unreadable kubeconfig",
            GOOD.replacen("kubeconfig = \"{kc}\"", "kubeconfig = \"{kc}.missing\"", 1),
            "groups[env0].primary.kubeconfig: cannot read kubeconfig",
        ),
        (
            "missing context",
            GOOD.replace("context = \"standby\"", "context = \"dr\""),
            "groups[env0].standby.context: context \"dr\" not found in kubeconfig",
        ),
        (
            "malformed URL",
            format!(
                "{}\n[[groups.http_checks]]\nname = \"proxy\"\nurl = \"agent-proxy/healthz\"\n",
                *GOOD
            ),
            "groups[env0].http_checks[0].url: ",
        ),
        (
            "bad selector",
            GOOD.replace("env0=agent-proxy", "env0 is agent-proxy"),
            "groups[env0].workloads[1].selector: ",
        ),
    ];
    for (what, text, expected) in cases {
        let path = f.config(text);
        let out = check_config(&path, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains(expected),
            "{what}: expected {expected:?} in:\n{err}"
        );
        assert!(
            err.contains(&path.display().to_string()),
            "{what}: file not named in:\n{err}"
        );
        assert!(stdout(&out).is_empty(), "{what}: printed a configuration");
    }
}

/// A file that is not a configuration (binary, huge, control bytes) or not valid gets a
/// short message naming the file as given, with no raw control byte in it.
#[test]
fn check_config_quotes_bad_files_safely_naming_them_as_given() {
    let f = Fixture::new();
    let good = f.config(&GOOD);
    let good = std::fs::read_to_string(good).unwrap();
    let garbage: Vec<u8> = (0..100_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let long_value = format!("[daemon]\nidentity = \"{}\"\n", "x".repeat(100_000));
    let long_line = format!("[daemon]\nprobe_interval = 5{}\n", " 5".repeat(50_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("binary garbage", garbage, ": is not UTF-8 text (byte 0x"),
        (
            "a 100 KB line",
            long_line.into_bytes(),
            ": not valid TOML at line 2, column 18: ",
        ),
        (
            "a 100 KB value",
            format!("{long_value}{}", &good[good.find("[[groups]]").unwrap()..]).into_bytes(),
            "daemon.identity: must be at most 128 characters (got 100000)",
        ),
        (
            "a NUL byte",
            b"[daemon]\nmode = \"auto\0\"\n".to_vec(),
            "mode = \"auto\\0\"",
        ),
        (
            "an escape sequence in a value",
            good.replace("[daemon]", "[daemon]\nmode = \"\\u001b[2J\"")
                .into_bytes(),
            "daemon.mode: unknown value \"\\u{1b}[2J\": use one of \"observe\", \"auto\"",
        ),
        (
            "an unknown mode",
            good.replace("[daemon]", "[daemon]\nmode = \"yolo\"")
                .into_bytes(),
            "daemon.mode: unknown value \"yolo\": use one of \"observe\", \"auto\"",
        ),
        (
            "an unknown log format",
            good.replace("[daemon]", "[daemon]\nlog_format = \"xml\"")
                .into_bytes(),
            "daemon.log_format: unknown value \"xml\": use one of \"text\", \"json\"",
        ),
    ];
    let sub = f.dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    for (what, bytes, expected) in cases {
        std::fs::write(f.dir.path().join("case.toml"), &bytes).unwrap();
        let absolute = f.dir.path().join("case.toml").display().to_string();
        // As given: absolute, relative, and relative through a parent directory.
        for (dir, given) in [
            (None, absolute.as_str()),
            (Some(f.dir.path()), "case.toml"),
            (Some(sub.as_path()), "../case.toml"),
        ] {
            let out = run_in(dir, &["check-config", "--config", given], &[]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{what}: {err}");
            assert!(
                err.starts_with(&format!("kube-failover: {given}: ")),
                "{what}: path not as given ({given}) in:\n{err}"
            );
            assert!(err.contains(expected), "{what}: {expected:?} in:\n{err}");
            assert!(
                !out.stderr.iter().any(|&b| b < 0x20 && b != b'\n'),
                "{what}: control byte in:\n{err:?}"
            );
            assert!(err.len() < 1000, "{what}: {} bytes:\n{err}", err.len());
            assert!(stdout(&out).is_empty(), "{what}: printed a configuration");
        }
    }
}

#[test]
fn check_config_lists_every_problem() {
    let f = Fixture::new();
    let text = GOOD
        .replace(
            "failure_threshold = 3",
            "failure_threshold = 0\nsuccess_threshold = 0",
        )
        .replace("context = \"standby\"", "context = \"dr\"");
    let out = check_config(&f.config(&text), &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("invalid configuration (3 problems)"), "{err}");
    for key in [
        "groups[env0].policy.failure_threshold",
        "groups[env0].policy.success_threshold",
        "groups[env0].standby.context",
    ] {
        assert!(err.contains(&format!("\n  {key}: ")), "{key} in:\n{err}");
    }
}

#[test]
fn check_config_and_run_read_the_webhook_secret_files_the_operator_commands_do_not() {
    let f = Fixture::new();
    let token = f.dir.path().join("webhook-token");
    let text = format!(
        "{}\n[notify]\n[[notify.webhooks]]\nname = \"oncall\"\nurl = \"https://hooks.example.com/x\"\n\
         secret_header = \"Authorization\"\nsecret_file = \"{}\"\n",
        *GOOD,
        token.display()
    );
    let path = f.config(&text);
    // Missing: check-config and run refuse it, naming the key and the file.
    for args in [
        vec!["check-config", "--config", path.to_str().unwrap()],
        vec!["run", "--config", path.to_str().unwrap()],
    ] {
        let out = run(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("notify.webhooks[oncall].secret_file: cannot read"),
            "{err}"
        );
        assert!(err.contains(&token.display().to_string()), "{err}");
    }
    // The operator's commands send no notice: the file is not theirs to read (this one
    // fails later, on the unreachable clusters, not on the configuration).
    let out = run(
        &[
            "history",
            "--config",
            path.to_str().unwrap(),
            "--group",
            "env0",
        ],
        &[],
    );
    assert!(!stderr(&out).contains("secret_file"), "{}", stderr(&out));

    std::fs::write(&token, "Bearer s3cr3t-token\n").unwrap();
    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("[[notify.webhooks]]"), "{printed}");
    assert!(printed.contains("[groups.state]"), "{printed}");
    assert!(!printed.contains("s3cr3t"), "{printed}");
}

#[test]
fn missing_config_file_is_named() {
    let f = Fixture::new();
    let absent = f.dir.path().join("nowhere.toml");
    let out = check_config(&absent, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&absent.display().to_string()),
        "{}",
        stderr(&out)
    );
}

/// The whole message, pinned: the cause (the error's source) is named once, after the
/// context the error itself says.
#[test]
fn an_error_names_its_cause_once() {
    let f = Fixture::new();
    let config = f.config(&GOOD);
    let absent = f.dir.path().join("absent.trace");
    let out = run(
        &[
            "simulate",
            "--config",
            config.to_str().unwrap(),
            "--trace",
            absent.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "kube-failover: cannot read trace {}: No such file or directory (os error 2)\n",
            absent.display()
        )
    );
}

/// A cause given as an error's source is printed once, after the context that says
/// where it happened: the whole message of `check-config` for a kubeconfig that does not
/// exist, pinned, so that a message which also says its source's text cannot return.
#[test]
fn an_unreadable_kubeconfig_is_named_with_its_cause_once() {
    let f = Fixture::new();
    let config =
        f.config(&GOOD.replacen("kubeconfig = \"{kc}\"", "kubeconfig = \"{kc}.missing\"", 1));
    let kubeconfig = f.dir.path().join("clusters.kubeconfig.missing");
    let out = check_config(&config, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "kube-failover: {}: invalid configuration (1 problem):\n  \
             groups[env0].primary.kubeconfig: cannot read kubeconfig {}: \
             No such file or directory (os error 2)\n",
            config.display(),
            kubeconfig.display()
        )
    );
}

/// An operator's command against an API server that refuses connections: the whole
/// message, pinned. The Kubernetes client's error is said once, the way every report of
/// the crate says it (secret-free), not followed by kube's own wrapping of the same cause
/// (`ServiceError: client error (Connect): tcp connect error: Connection refused…`).
#[test]
fn a_refused_api_server_is_named_once_in_the_message_of_a_command() {
    let f = Fixture::new();
    // Two ports that were just free (a group needs two API servers): nothing listens.
    let bound = [(); 2].map(|()| TcpListener::bind("127.0.0.1:0").unwrap());
    let [primary, standby] = bound.map(|l| l.local_addr().unwrap().port());
    let kubeconfig = f.dir.path().join("clusters.kubeconfig");
    let text = KUBECONFIG
        .replace("127.0.0.1:6443", &format!("127.0.0.1:{primary}"))
        .replace("127.0.0.1:7443", &format!("127.0.0.1:{standby}"));
    std::fs::write(&kubeconfig, text).unwrap();
    let config = f.config(&GOOD);
    let out = run(
        &[
            "history",
            "--group",
            "env0",
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "kube-failover: group env0: cannot read the failover record: ConfigMap \
         env0-agent/kube-failover-env0: get: connection refused\n"
    );
}

#[test]
fn run_refuses_an_invalid_configuration_before_starting() {
    let f = Fixture::new();
    let path = f.config(&GOOD.replace("failure_threshold = 3", "failure_threshold = 0"));
    let out = run(&["run", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("groups[env0].policy.failure_threshold"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_of_an_unreachable_daemon_exits_3() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = run(&["status", "--addr", &addr], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot reach the daemon at {addr}")),
        "{}",
        stderr(&out)
    );
}

const STATUS_JSON: &str = r#"{"version":"0.1.0","mode":"auto","identity":"watcher-1","ready":true,
"last_tick_unix":null,"groups":[{"name":"env0","state":"primary_active","since_unix":1767323045.0,
"primary_down":false,"standby_fit":true,"active_cluster":"primary","signals":[{"name":"api","up":true,
"consecutive_failures":0,"consecutive_successes":7,"last_reason":"ok","last_latency_seconds":0.004,
"last_detail":""}],"standby":{"api_reason":"ok","workloads_reason":"ok","detail":""},"record":null,
"last_decision":{"at_unix":1767323045.0,"reasons":["primary_healthy"],"actions":[],"would_promote":false},
"unexpected_standby_replicas":0,"last_action_error":null}]}"#;

/// Serves `responses` (status line + body), one per connection, on a loopback port,
/// then stops. Returns the address.
fn fake_daemon(responses: Vec<(&'static str, &'static str)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for (status, body) in responses {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).ok();
            assert!(request_line.starts_with("GET /status "), "{request_line}");
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn status_prints_a_table_or_the_raw_json() {
    let addr = fake_daemon(vec![("200 OK", STATUS_JSON), ("200 OK", STATUS_JSON)]);
    let out = run(&["status", "--addr", &addr], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("group env0"), "{text}");
    assert!(
        text.contains("primary_active since 2026-01-02T03:04:05Z"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("api") && l.contains(" up ")),
        "{text}"
    );
    assert!(text.contains("reasons: primary_healthy"), "{text}");

    let out = run(&["status", "--addr", &addr, "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), STATUS_JSON);
}

#[test]
fn status_with_an_error_answer_exits_1() {
    let addr = fake_daemon(vec![
        ("503 Service Unavailable", "{}"),
        ("200 OK", "{\"not\":\"a status\"}"),
    ]);
    let out = run(&["status", "--addr", &addr], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("HTTP 503"), "{}", stderr(&out));
    let out = run(&["status", "--addr", &addr], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
}

/// `N` distinct loopback ports with nothing listening on them (they were free a moment
/// ago): held together while picked, since a port just released may be handed out
/// again at once.
fn closed_ports<const N: usize>() -> [u16; N] {
    let held: [TcpListener; N] = std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|l| l.local_addr().unwrap().port())
}

/// Runs the daemon with its log going to a pipe, against two clusters whose API ports
/// are closed, until a state change was logged and two more ticks passed; returns the
/// log.
fn daemon_log_against_closed_ports(env: &[(&str, &str)]) -> Vec<u8> {
    let f = Fixture::new();
    // Two API servers and the admin port, all different: the same port twice would
    // make the two clusters one (a configuration error, not an outage).
    let [primary, standby, admin] = closed_ports();
    let kubeconfig = KUBECONFIG
        .replace("6443", &primary.to_string())
        .replace("7443", &standby.to_string());
    std::fs::write(f.dir.path().join("clusters.kubeconfig"), kubeconfig).unwrap();
    let config = f.config(
        &GOOD
            .replace("\"2000ms\"", "\"300ms\"")
            .replace(
                "probe_timeout = \"1s\"",
                &format!(
                    "probe_timeout = \"200ms\"\nmode = \"observe\"\nlisten = \"127.0.0.1:{admin}\""
                ),
            )
            .replace("failure_threshold = 3", "failure_threshold = 1"),
    );
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config", config.to_str().unwrap()]);
    for (key, _) in std::env::vars() {
        if key.starts_with("KUBE_FAILOVER") || key == "RUST_LOG" || key == "NO_COLOR" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stderr, &mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut changed_at = None;
    while std::time::Instant::now() < deadline {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            log.extend(chunk);
        }
        if changed_at.is_none() && String::from_utf8_lossy(&log).contains("state changed") {
            changed_at = Some(std::time::Instant::now());
        }
        if changed_at.is_some_and(|at| at.elapsed() > Duration::from_millis(700)) {
            break;
        }
    }
    // SIGTERM, as systemd or the kubelet would stop it.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait for the daemon");
    reader.join().unwrap();
    log.extend(rx.try_iter().flatten());
    assert!(
        changed_at.is_some(),
        "no state change logged within 30 s:\n{}",
        String::from_utf8_lossy(&log)
    );
    assert_eq!(status.code(), Some(0), "{}", String::from_utf8_lossy(&log));
    log
}

/// A log written to a pipe has no colour codes, and the kube client's own per-request
/// error lines (several per tick during an outage, naming no cluster) stay out, while
/// the daemon's lines are there.
#[test]
fn daemon_log_to_a_pipe_is_plain_and_not_flooded() {
    let log = daemon_log_against_closed_ports(&[]);
    let text = String::from_utf8_lossy(&log);
    assert!(!log.contains(&0x1b), "escape code in:\n{text:?}");
    assert!(!text.contains("failed with error"), "{text}");
    for own in [
        " INFO kube_failover: starting",
        "kube-failover started",
        "state changed",
        "group=\"env0\"",
    ] {
        assert!(text.contains(own), "{own:?} missing in:\n{text}");
    }
}

/// `RUST_LOG` naming `kube_client` brings the kube client's lines back.
#[test]
fn rust_log_can_enable_the_kube_client_lines() {
    let log = daemon_log_against_closed_ports(&[("RUST_LOG", "info,kube_client=error")]);
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("failed with error"), "{text}");
    assert!(!log.contains(&0x1b), "escape code in:\n{text:?}");
}

#[test]
fn guard_forms_want_their_command_and_check_fails_without_a_sidecar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("guard.toml");
    let config_arg = config.to_str().unwrap();
    let base = "group = \"env0\"\nside = \"primary\"\n[standby]\nkubeconfig = \"/nonexistent/kubeconfig\"\nnamespace = \"env0-agent\"\n";
    let both = |o: &Output| format!("{}{}", stdout(o), stderr(o));
    // A sidecar starts no agent: a command after `--` is a mistake, said before anything
    // else is tried.
    std::fs::write(&config, format!("form = \"sidecar\"\n{base}")).unwrap();
    let out = run(&["guard", "--config", config_arg, "--", "/bin/true"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    // (The log line quotes the message: its inner quotes come escaped.)
    assert!(
        both(&out).contains(r#"form = \"sidecar\" runs no agent"#),
        "{}",
        both(&out)
    );
    // A wrapper without its agent's command.
    std::fs::write(&config, base).unwrap();
    let out = run(&["guard", "--config", config_arg], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(both(&out).contains("no agent command"), "{}", both(&out));
    // The probe beside no sidecar fails (and never runs the agent's own probe).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let marker = dir.path().join("probe-ran");
    let url = format!("http://127.0.0.1:{port}/agent");
    let out = run(
        &[
            "guard",
            "check",
            "--url",
            &url,
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(out.status.code(), Some(0), "{}", both(&out));
    assert!(
        stderr(&out).contains(&format!("the sidecar guard does not answer at {url}")),
        "{}",
        stderr(&out)
    );
    assert!(
        !marker.exists(),
        "the agent's probe ran without the guard's answer"
    );
}

#[test]
fn guard_install_copies_a_runnable_binary_and_guarding_still_needs_a_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("guard").join("kube-failover");
    std::fs::create_dir(dest.parent().unwrap()).expect("mkdir");
    let out = run(&["guard", "install", dest.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("installed"), "{}", stdout(&out));
    // The copy is the same program: it runs and reports the same version.
    let copy = Command::new(&dest)
        .arg("--version")
        .output()
        .expect("run the copy");
    assert_eq!(copy.status.code(), Some(0));
    assert_eq!(stdout(&copy), stdout(&run(&["--version"], &[])));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
    // A destination that cannot be written: exit 1, the path named.
    let out = run(&["guard", "install", "/nonexistent-dir/kube-failover"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent-dir"),
        "{}",
        stderr(&out)
    );
    // `guard` without a subcommand and a command is refused (its config cannot be read;
    // a wrapper's would want the command after `--`), and an agent called `install`
    // after `--` is an agent, not the subcommand.
    let out = run(&["guard", "--config", "/nonexistent.toml"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(
        &[
            "guard",
            "--config",
            "/nonexistent.toml",
            "--",
            "install",
            "x",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nonexistent.toml"),
        "{}",
        stderr(&out)
    );
}
