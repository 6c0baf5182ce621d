//! What `deploy/` ships is checked with the tools that will read it: `systemd-analyze verify`
//! for the unit, `haproxy -c` for the HAProxy configuration, `bash -n` for the scripts,
//! `relay check-config` for the production and container configurations, and the compose file's
//! mounts against the repository. (The scripts themselves run for real in `bluegreen.rs`; the
//! Docker images cannot be built offline.)

use std::path::Path;
use std::process::Command;

use relay_tests::{plugin_wasm, relay_bin, repo_root};

fn run(command: &mut Command) -> (bool, String) {
    let output = command.output().expect("run the checker (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn the_systemd_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/relay@.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/relay/%i/bin/relay serve --config /opt/relay/%i/config/relay.yaml"));
    for hardening in [
        "User=relay",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "TimeoutStopSec=55",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening:?}");
    }
    // The binary is not installed here: verify the unit with a command that exists.
    let testable = unit.replace("ExecStart=/opt/relay/%i/bin/relay ", "ExecStart=/bin/true ");
    std::fs::write(dir.path().join("relay@.service"), testable).unwrap();
    let (ok, text) = run(Command::new("systemd-analyze").arg("verify").arg(dir.path().join("relay@blue.service")));
    assert!(ok, "systemd-analyze verify: {text}");
    for colour in ["blue", "green"] {
        let env = std::fs::read_to_string(repo_root().join(format!("deploy/systemd/{colour}.env"))).unwrap();
        assert!(env.contains("RELAY_PORT="), "{colour}.env");
    }
}

#[test]
fn the_haproxy_configuration_checks() {
    let dir = tempfile::tempdir().unwrap();
    let ca = relay_tests::pki::TestCa::new(dir.path(), "ca");
    let issued = ca.server("localhost", "lb");
    let pem = dir.path().join("lb.pem");
    std::fs::write(
        &pem,
        std::fs::read_to_string(&issued.cert).unwrap() + &std::fs::read_to_string(&issued.key).unwrap(),
    )
    .unwrap();
    let cfg = repo_root().join("deploy/haproxy/haproxy.cfg");
    let (ok, text) = run(Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .env("RELAY_LB_UNPRIVILEGED", "1")
        .env("RELAY_LB_CERT", &pem)
        .env("RELAY_LB_SOCKET", dir.path().join("admin.sock"))
        .env("RELAY_LB_STATE_FILE", dir.path().join("state")));
    assert!(ok, "haproxy -c: {text}");
    let text = std::fs::read_to_string(cfg).unwrap();
    // Sessions are shared through Redis: nothing sticks to a colour (the table is documented as
    // optional, commented out).
    assert!(!text.lines().any(|l| l.trim_start().starts_with("stick ")), "haproxy.cfg sticks sessions");
    for needed in [
        "ssl-min-ver TLSv1.2",
        "ECDHE+AESGCM",
        "balance roundrobin",
        "timeout tunnel",
        "mode tcp",
        "option httpchk GET /readyz",
        "level admin",
        "stats enable",
    ] {
        assert!(text.contains(needed), "haproxy.cfg lacks {needed:?}");
    }
}

#[test]
fn the_scripts_parse_and_explain_themselves() {
    for script in ["deploy/deploy.sh", "deploy/rollback.sh", "deploy/lib/bluegreen.sh"] {
        let (ok, text) = run(Command::new("bash").arg("-n").arg(repo_root().join(script)));
        assert!(ok, "{script}: {text}");
    }
    for script in ["deploy/deploy.sh", "deploy/rollback.sh"] {
        let path = repo_root().join(script);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert!(mode & 0o111 != 0, "{script} is executable");
    }
    let (ok, usage) = run(Command::new(repo_root().join("deploy/deploy.sh")).arg("--help"));
    assert!(!ok && usage.contains("BUILD_DIR"), "{usage}");
}

/// A config of `deploy/` checked as `relay check-config` would in its install layout: plugins
/// beside it in `../plugins`, its absolute state paths moved into a temporary directory.
fn check_config(shipped: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("config")).unwrap();
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/relay/fiedler")).unwrap();
    for plugin in ["token_auth", "rate_limit", "echo_adapter", "fiedler"] {
        std::fs::copy(plugin_wasm(plugin), root.join(format!("plugins/{plugin}.wasm"))).unwrap();
    }
    let text = std::fs::read_to_string(repo_root().join(shipped)).unwrap();
    let moved = text
        .replace("/var/lib/relay", &root.join("var/lib/relay").display().to_string())
        .replace("/var/cache/relay", &root.join("var/cache/relay").display().to_string());
    std::fs::write(root.join("config/relay.yaml"), moved).unwrap();
    std::fs::write(root.join("var/lib/relay/backends.yaml"), "backends: []\n").unwrap();
    let (ok, text) = run(Command::new(relay_bin())
        .args(["check-config", "--config"])
        .arg(root.join("config/relay.yaml"))
        .env("RELAY_AUTH_TOKEN", "x"));
    assert!(ok, "{shipped}: {text}");
}

#[test]
fn the_shipped_configurations_pass_check_config() {
    check_config("deploy/config/relay.yaml");
    check_config("deploy/docker/relay.yaml");
}

#[test]
fn the_compose_file_mounts_what_the_repository_holds() {
    let dir = repo_root().join("deploy/docker");
    let mut compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("docker-compose.yml")).unwrap()).unwrap();
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().expect("services");
    for name in ["blue", "green", "haproxy", "redis", "logger"] {
        assert!(services.contains_key(name), "service {name}");
    }
    for (name, service) in services {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let spec = volume.as_str().unwrap_or_default();
            if let Some(source) = spec.split(':').next().filter(|s| s.starts_with('.')) {
                let exists = Path::new(&dir).join(source).exists() || source == "./certs";
                assert!(exists, "{name:?} mounts {source}, which is not in the repository");
            }
            if spec.contains("relay.yaml") || spec.contains("haproxy.cfg") {
                assert!(spec.ends_with(":ro"), "{name:?}: configs are mounted read-only: {spec}");
            }
        }
    }
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    // The health check asks /readyz (no login, no session every 10 s); tini reaps stdio
    // backends' grandchildren; a variant image has Node.js and Python for npx/uvx backends.
    for needed in [
        "HEALTHCHECK",
        "USER relay",
        "AS builder",
        "CMD relay health --ready",
        "\"tini\", \"--\"",
        "AS relay-node-python",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed}");
    }
    // No node_modules (the JavaScript plugins' are hundreds of MB) or venvs in the context.
    let ignore = std::fs::read_to_string(dir.join("Dockerfile.dockerignore")).unwrap();
    for needed in ["**/node_modules", "**/.venv", "target"] {
        assert!(ignore.lines().any(|l| l.trim() == needed), "Dockerfile.dockerignore lacks {needed}");
    }
}

/// A build directory laid out as deploy.sh takes it, in `parent`.
fn fake_build(parent: &Path) -> std::path::PathBuf {
    let build = parent.join("build");
    for sub in ["bin", "plugins", "config"] {
        std::fs::create_dir_all(build.join(sub)).unwrap();
    }
    std::fs::write(build.join("bin/relay"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::write(build.join("config/relay.yaml"), "{}\n").unwrap();
    std::fs::write(build.join("plugins/x.wasm"), "").unwrap();
    run(Command::new("chmod").args(["-R", "u=rwX,go=rX"]).arg(&build));
    run(Command::new("chmod").arg("0755").arg(build.join("bin/relay")));
    build
}

fn deploy(build: &Path, root: &Path) -> (bool, String) {
    run(Command::new(repo_root().join("deploy/deploy.sh"))
        .arg(build)
        .env("RELAY_ROOT", root)
        .env("HAPROXY_SOCKET", root.join("no-such.sock")))
}

#[test]
fn deploy_refuses_a_build_someone_else_could_have_changed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("opt");
    std::fs::create_dir_all(&root).unwrap();
    // A build tree another user made (a predictable /tmp path pre-created by `nobody`).
    let theirs = dir.path().join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    let build = fake_build(&theirs);
    run(Command::new("chown").args(["-R", "nobody"]).arg(&theirs));
    let (ok, text) = deploy(&build, &root);
    assert!(!ok && text.contains("refusing a build others could have changed"), "{text}");
    // Ours, but one file others may write.
    let ours = dir.path().join("ours");
    std::fs::create_dir_all(&ours).unwrap();
    let build = fake_build(&ours);
    run(Command::new("chmod").arg("o+w").arg(build.join("plugins/x.wasm")));
    let (ok, text) = deploy(&build, &root);
    assert!(!ok && text.contains("writable by others"), "{text}");
    // Clean: it gets past the check (and stops at HAProxy, which this test does not run).
    run(Command::new("chmod").arg("o-w").arg(build.join("plugins/x.wasm")));
    let (ok, text) = deploy(&build, &root);
    assert!(!ok && !text.contains("refusing a build") && text.contains("HAProxy"), "{text}");
}

#[test]
fn the_health_check_of_a_new_build_runs_as_the_service_user() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // A stand-in for the new build's relay: says who ran it and whether it got the token.
    let fake = bin.join("relay");
    std::fs::write(&fake, "#!/bin/sh\necho \"uid=$(id -u) token=${RELAY_AUTH_TOKEN:+set}\"\n").unwrap();
    run(Command::new("chmod").args(["-R", "0755"]).arg(dir.path()));
    let script = format!("source {}; relay_health blue", repo_root().join("deploy/lib/bluegreen.sh").display());
    let (ok, text) = run(Command::new("bash")
        .args(["-c", &script])
        .env("RELAY_BIN", &fake)
        .env("RUN_AS", "nobody")
        .env("RELAY_AUTH_TOKEN", "t0ken"));
    let nobody = String::from_utf8(Command::new("id").args(["-u", "nobody"]).output().unwrap().stdout).unwrap();
    assert!(ok, "{text}");
    assert!(text.contains(&format!("uid={} token=set", nobody.trim())), "{text}");
}

/// While a colour stops, the scripts show its drain (requests running, sessions open) from its
/// private metrics listener, the one its env file names: under the production config the main
/// port's `/metrics` needs the admin role, which the scripts do not send.
#[tokio::test]
async fn the_drain_is_shown_from_the_colours_private_metrics_listener() {
    let dir = tempfile::tempdir().unwrap();
    let auth = relay_tests::copy_plugin(dir.path(), "token_auth");
    let yaml = format!(
        "metrics: {{listen: '127.0.0.1:0'}}\nplugins:\n  - name: auth\n    world: auth\n    path: {}\n    config:\n      tokens:\n        - {{token: admin-7c1d, principal: ops, roles: [admin]}}\n",
        auth.display()
    );
    let relay = relay_tests::Relay::start_files(dir.path(), &yaml, "backends: []\n", &[]).await;
    let env = dir.path().join("env");
    std::fs::create_dir_all(&env).unwrap();
    let listen = format!("127.0.0.1:{}", relay.metrics_port.expect("a private listener"));
    std::fs::write(env.join("blue.env"), format!("RELAY_PORT={}\nRELAY_METRICS_LISTEN=\"{listen}\"\n", relay.port))
        .unwrap();
    let script =
        format!("source {}; metric blue relay_sessions", repo_root().join("deploy/lib/bluegreen.sh").display());
    let (ok, text) =
        run(Command::new("bash").args(["-c", &script]).env("ENV_DIR", &env).env("BLUE_PORT", relay.port.to_string()));
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "0", "the open sessions, read without a token: {text:?}");
}

/// `relay check-config` gets the target colour's settings (tokens, Redis password, API keys)
/// through its environment: never on a command line, which any local user can read in `ps`
/// (`runuser` stays its parent for as long as the check compiles the plugins).
#[test]
fn the_configuration_check_gets_the_colours_secrets_without_a_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, env) = (dir.path().join("bin"), dir.path().join("env"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&env).unwrap();
    std::fs::write(env.join("green.env"), "RELAY_AUTH_TOKEN=\"s3cret-7d\"\n# comment\nRELAY_PORT=8002\n").unwrap();
    // A stand-in for the new build's relay: says what it got and what its parent's command line is.
    let fake = bin.join("relay");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"uid=$(id -u) token=$RELAY_AUTH_TOKEN instance=$RELAY_INSTANCE args=$*\"\necho \"parent=$(tr '\\0' ' ' </proc/$PPID/cmdline)\"\n",
    )
    .unwrap();
    run(Command::new("chmod").args(["-R", "0755"]).arg(dir.path()));
    let script = format!(
        "source {}; check_config green {} /etc/x.yaml",
        repo_root().join("deploy/lib/bluegreen.sh").display(),
        fake.display()
    );
    let (ok, text) = run(Command::new("bash")
        .args(["-c", &script])
        .env("RUN_AS", "nobody")
        .env("ENV_DIR", &env)
        .env_remove("RELAY_AUTH_TOKEN"));
    assert!(ok, "{text}");
    assert!(text.contains("token=s3cret-7d instance=green args=check-config --config /etc/x.yaml"), "{text}");
    let parent = text.lines().find(|l| l.starts_with("parent=")).expect("the parent's command line");
    assert!(parent.contains("runuser") && !parent.contains("s3cret"), "{parent}");
}

/// The colours listen on unprivileged ports: a local user may take a stopped colour's port (the
/// colour then cannot listen there) and answer its checks. The process on the port must be the
/// colour's own before it is given the health check's token or any traffic.
#[tokio::test]
async fn a_colour_whose_port_another_process_holds_is_refused_before_its_health_check() {
    let dir = tempfile::tempdir().unwrap();
    // Someone else's relay on green's port, calling itself green.
    let squatter =
        relay_tests::Relay::start_files(dir.path(), "{}\n", "backends: []\n", &[("RELAY_INSTANCE", "green")]).await;
    let fake = dir.path().join("relay-health");
    std::fs::write(&fake, "#!/bin/sh\necho health-ran\n").unwrap();
    run(Command::new("chmod").arg("0755").arg(&fake));
    let check = |pid: String| {
        let script = format!("source {}; check_colour green", repo_root().join("deploy/lib/bluegreen.sh").display());
        run(Command::new("bash")
            .args(["-c", &script])
            .env("GREEN_PORT", squatter.port.to_string())
            .env("START_CMD", "true")
            .env("ALIVE_CMD", "true")
            .env("PID_CMD", format!("echo {pid}"))
            .env("RELAY_BIN", &fake)
            .env("RUN_AS", "")
            .env("RELAY_AUTH_TOKEN", "admin-token"))
    };
    // Green's own process is another one (here: pid 1).
    let (ok, text) = check("1".into());
    assert!(!ok && text.contains("another program took the port"), "{text}");
    assert!(!text.contains("health-ran"), "the token went to the port's holder: {text}");
    // The same checks pass when the port's holder is the colour's process.
    let (ok, text) = check(squatter.pid().to_string());
    assert!(ok && text.contains("health-ran"), "{text}");
}
