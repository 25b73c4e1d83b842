//! deploy.sh and teardown.sh against a fake gcloud (tests/deploy/gcloud) that records every
//! call and runs the "deployed" service as a real vertex-proxy on loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A scratch project: a working directory with a keys file, a fake gcloud on PATH, its state.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("vertex-proxy-deploy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::os::unix::fs::symlink(
            Path::new(ROOT).join("tests/deploy/gcloud"),
            dir.join("bin/gcloud"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_vertex-proxy"),
            dir.join("bin/vertex-proxy"),
        )
        .unwrap();
        std::fs::copy(
            Path::new(ROOT).join("api-keys.example.json"),
            dir.join("work/api-keys.json"),
        )
        .unwrap();
        Scratch { dir }
    }

    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn run(&self, script: &str, args: &[&str], path: &str, project: &str) -> Output {
        Command::new(Path::new(ROOT).join(script))
            .args(args)
            .current_dir(self.dir.join("work"))
            .env_clear()
            .env("PATH", path)
            .env("HOME", &self.dir)
            .env("FAKE_GCLOUD_STATE", self.dir.join("state"))
            .env("FAKE_GCLOUD_PROJECT", project)
            .env("VERTEX_PROXY_BIN", env!("CARGO_BIN_EXE_vertex-proxy"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the script runs")
    }

    fn ok(&self, script: &str, args: &[&str]) -> String {
        let output = self.run(script, args, &self.path(), "test-proj");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{script} {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Every gcloud call so far, each as its list of arguments.
    fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.dir.join("state/calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn keys_file(&self) -> PathBuf {
        self.dir.join("work/api-keys.json")
    }

    fn service_url(&self, service: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(format!("state/services/{service}/url")))
            .ok()
            .map(|u| u.trim().to_owned())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Stop any "deployed" proxy this test left running.
        if let Ok(services) = std::fs::read_dir(self.dir.join("state/services")) {
            for service in services.flatten() {
                if let Ok(pid) = std::fs::read_to_string(service.path().join("pid")) {
                    let _ = Command::new("kill").arg(pid.trim()).status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Mutating gcloud calls: none may happen before the pre-flight checks pass.
fn is_mutation(call: &[String]) -> bool {
    let words: Vec<&str> = call_words(call).collect();
    [
        "create",
        "enable",
        "add-iam-policy-binding",
        "remove-iam-policy-binding",
        "deploy",
        "update",
        "delete",
        "add",
    ]
    .iter()
    .any(|verb| words.contains(verb))
}

fn has(call: &[String], flag: &str) -> bool {
    call.iter().any(|a| a == flag)
}

/// The calls whose words (the arguments that are not flags, positional names after `--`
/// included) begin with `words`.
fn calls_with<'a>(calls: &'a [Vec<String>], words: &[&str]) -> Vec<&'a Vec<String>> {
    calls
        .iter()
        .filter(|c| {
            let said: Vec<&str> = call_words(c).collect();
            said.len() >= words.len() && said[..words.len()] == *words
        })
        .collect()
}

/// A call's words, as gcloud reads them: flags left out, and everything after `--` a word.
fn call_words(call: &[String]) -> impl Iterator<Item = &str> {
    let end = call.iter().position(|a| a == "--").unwrap_or(call.len());
    let before = call[..end].iter().filter(|a| !a.starts_with("--"));
    before.chain(call.iter().skip(end + 1)).map(String::as_str)
}

fn plaintext_keys(file: &Path) -> Vec<String> {
    let entries: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    entries
        .iter()
        .filter_map(|e| e["key"].as_str().map(str::to_owned))
        .collect()
}

/// The HTTP status of GET /v1/models with `key`, sent through curl's stdin like deploy.sh does.
fn models_status(url: &str, key: &str) -> u16 {
    use std::io::Write;
    let mut child = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "@-",
            &format!("{url}/v1/models"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("x-api-key: {key}\n").as_bytes())
        .unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits, with a deadline, for the service to answer `expected` for `key`: a mounted secret is
/// picked up at the proxy's next reload.
fn wait_for_status(url: &str, key: &str, expected: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = models_status(url, key);
        if status == expected {
            return;
        }
        assert!(Instant::now() < deadline, "still {status}, not {expected}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn add_key(file: &Path, id: &str, key: &str, drop_id: &str) {
    let mut entries: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    entries.retain(|e| e["id"] != drop_id);
    entries.push(serde_json::json!({"id": id, "key": key}));
    std::fs::write(file, serde_json::to_string_pretty(&entries).unwrap()).unwrap();
}

const NEW_KEY: &str = "sk_live_rotated_in_key_0123456789";

#[test]
fn deploy_redeploy_rotate_and_tear_down_with_keys_in_the_environment() {
    let scratch = Scratch::new("env");
    let keys = plaintext_keys(&scratch.keys_file());
    let out = scratch.ok("deploy.sh", &["--domain", "llm.example.com"]);
    let first = scratch.calls();

    // What the first run made.
    let enable = calls_with(&first, &["services", "enable"]);
    assert_eq!(enable.len(), 1);
    for api in [
        "run.googleapis.com",
        "aiplatform.googleapis.com",
        "artifactregistry.googleapis.com",
        "cloudbuild.googleapis.com",
    ] {
        assert!(has(enable[0], api), "{api} not enabled");
    }
    assert_eq!(
        calls_with(
            &first,
            &["iam", "service-accounts", "create", "vertex-proxy"]
        )
        .len(),
        1
    );
    let binding = calls_with(&first, &["projects", "add-iam-policy-binding", "test-proj"]);
    assert_eq!(binding.len(), 1);
    assert!(has(binding[0], "--role=roles/aiplatform.user"));
    assert!(has(
        binding[0],
        "--member=serviceAccount:vertex-proxy@test-proj.iam.gserviceaccount.com"
    ));
    let deploy = calls_with(&first, &["run", "deploy", "vertex-proxy"]);
    assert_eq!(deploy.len(), 1);
    assert!(has(deploy[0], &format!("--source={ROOT}")));
    for flag in [
        "--region=us-central1",
        "--service-account=vertex-proxy@test-proj.iam.gserviceaccount.com",
        "--allow-unauthenticated",
        "--min-instances=0",
        "--use-http2",
        "--cpu-boost",
        "--timeout=3600",
        "--max-instances=4",
        "--concurrency=250",
        "--memory=256Mi",
        "--project=test-proj",
    ] {
        assert!(has(deploy[0], flag), "deploy lacks {flag}: {:?}", deploy[0]);
    }
    let env_flag = deploy[0]
        .iter()
        .find(|a| a.starts_with("--update-env-vars="))
        .expect("env vars");
    assert!(env_flag.starts_with("--update-env-vars=^@@^"), "{env_flag}");
    assert!(
        env_flag.contains("GOOGLE_CLOUD_PROJECT=test-proj")
            && env_flag.contains("VERTEX_LOCATION=global")
    );
    assert!(env_flag.contains("\"key_sha256\""));
    assert_eq!(
        calls_with(&first, &["beta", "run", "domain-mappings", "create"]).len(),
        1
    );
    assert!(
        out.contains("216.239.32.21") && out.contains("ghs.googlehosted.com."),
        "DNS records not printed:\n{out}"
    );
    assert!(out.contains("https://llm.example.com/v1"), "{out}");

    // Plaintext keys never reach gcloud, in any argument of any call.
    let everything = std::fs::read_to_string(scratch.dir.join("state/calls.jsonl")).unwrap();
    for key in &keys {
        assert!(
            !everything.contains(key.as_str()),
            "a plaintext key reached gcloud"
        );
    }
    // The deployed proxy (a real one) accepts the plaintext key by its hash.
    let url = scratch.service_url("vertex-proxy").expect("a service URL");
    assert_eq!(models_status(&url, &keys[0]), 200);

    // The second run creates nothing again; it only deploys a new revision.
    scratch.ok("deploy.sh", &["--domain", "llm.example.com"]);
    let second: Vec<Vec<String>> = scratch.calls()[first.len()..].to_vec();
    let mutations: Vec<&Vec<String>> = second.iter().filter(|c| is_mutation(c)).collect();
    assert_eq!(
        mutations.len(),
        1,
        "the second run changed more than the revision: {mutations:?}"
    );
    assert_eq!(mutations[0][..2], ["run", "deploy"]);

    // Rotation: a new key in, the first one out, with one command.
    add_key(&scratch.keys_file(), "rotated", NEW_KEY, "alice-laptop");
    let before = scratch.calls().len();
    scratch.ok("deploy.sh", &["keys"]);
    let rotation: Vec<Vec<String>> = scratch.calls()[before..].to_vec();
    let mutations: Vec<&Vec<String>> = rotation.iter().filter(|c| is_mutation(c)).collect();
    assert_eq!(mutations.len(), 1, "{mutations:?}");
    assert_eq!(
        call_words(mutations[0]).collect::<Vec<_>>(),
        ["run", "services", "update", "vertex-proxy"]
    );
    assert!(
        mutations[0]
            .iter()
            .any(|a| a.starts_with("--update-env-vars=^") && a.contains("API_KEYS_JSON="))
    );
    assert!(
        !std::fs::read_to_string(scratch.dir.join("state/calls.jsonl"))
            .unwrap()
            .contains(NEW_KEY)
    );
    let url = scratch.service_url("vertex-proxy").unwrap();
    assert_eq!(models_status(&url, NEW_KEY), 200);
    assert_eq!(models_status(&url, &keys[0]), 401);

    // Teardown removes what deploy made, and a second teardown is fine.
    let before = scratch.calls().len();
    scratch.ok("teardown.sh", &["--yes", "--domain", "llm.example.com"]);
    let teardown: Vec<Vec<String>> = scratch.calls()[before..].to_vec();
    for words in [
        &["beta", "run", "domain-mappings", "delete"][..],
        &["run", "services", "delete", "vertex-proxy"],
        &["projects", "remove-iam-policy-binding", "test-proj"],
        &[
            "iam",
            "service-accounts",
            "delete",
            "vertex-proxy@test-proj.iam.gserviceaccount.com",
        ],
    ] {
        assert_eq!(
            calls_with(&teardown, words).len(),
            1,
            "teardown did not {words:?}"
        );
    }
    assert!(!teardown.iter().any(|c| {
        c.iter()
            .any(|a| a.contains("services") && c.contains(&"disable".to_owned()))
    }));
    assert!(scratch.service_url("vertex-proxy").is_none());
    assert_eq!(
        models_status(&url, NEW_KEY),
        0,
        "the service still answers after teardown"
    );
    let before = scratch.calls().len();
    scratch.ok("teardown.sh", &["--yes", "--domain", "llm.example.com"]);
    assert!(
        !scratch.calls()[before..].iter().any(|c| is_mutation(c)),
        "a second teardown deleted something"
    );
}

#[test]
fn deploy_and_rotate_with_keys_in_secret_manager() {
    let scratch = Scratch::new("secret");
    let keys = plaintext_keys(&scratch.keys_file());
    scratch.ok("deploy.sh", &["--keys-secret", "vp-keys"]);
    let calls = scratch.calls();
    assert!(has(
        calls_with(&calls, &["services", "enable"])[0],
        "secretmanager.googleapis.com"
    ));
    assert_eq!(
        calls_with(&calls, &["secrets", "create", "vp-keys"]).len(),
        1
    );
    assert_eq!(
        calls_with(&calls, &["secrets", "versions", "add", "vp-keys"]).len(),
        1
    );
    let access = calls_with(&calls, &["secrets", "add-iam-policy-binding", "vp-keys"]);
    assert_eq!(access.len(), 1);
    assert!(has(access[0], "--role=roles/secretmanager.secretAccessor"));
    let deploy = calls_with(&calls, &["run", "deploy", "vertex-proxy"])[0];
    assert!(
        has(
            deploy,
            "--update-secrets=/secrets/api-keys.json=vp-keys:latest"
        ),
        "{deploy:?}"
    );
    let env_flag = deploy
        .iter()
        .find(|a| a.starts_with("--update-env-vars="))
        .unwrap();
    assert!(
        env_flag.contains("API_KEYS_FILE=/secrets/api-keys.json")
            && !env_flag.contains("API_KEYS_JSON")
    );
    // The secret holds hashes, never the plaintext keys.
    let stored = std::fs::read_to_string(scratch.dir.join("state/secrets/vp-keys/latest")).unwrap();
    assert!(stored.contains("key_sha256"));
    for key in &keys {
        assert!(!stored.contains(key.as_str()));
    }
    let url = scratch.service_url("vertex-proxy").unwrap();
    assert_eq!(models_status(&url, &keys[0]), 200);

    // Rotation adds a secret version only: no new revision.
    add_key(&scratch.keys_file(), "rotated", NEW_KEY, "alice-laptop");
    let before = scratch.calls().len();
    scratch.ok("deploy.sh", &["keys", "--keys-secret", "vp-keys"]);
    let rotation: Vec<Vec<String>> = scratch.calls()[before..].to_vec();
    let mutations: Vec<&Vec<String>> = rotation.iter().filter(|c| is_mutation(c)).collect();
    assert_eq!(mutations.len(), 1, "{mutations:?}");
    assert_eq!(
        call_words(mutations[0]).collect::<Vec<_>>(),
        ["secrets", "versions", "add", "vp-keys"]
    );
    wait_for_status(&url, NEW_KEY, 200);
    assert_eq!(models_status(&url, &keys[0]), 401);

    scratch.ok("teardown.sh", &["--yes", "--keys-secret", "vp-keys"]);
    assert_eq!(
        calls_with(&scratch.calls(), &["secrets", "delete", "vp-keys"]).len(),
        1
    );
}

#[test]
fn missing_tool_project_or_keys_file_fail_before_any_change() {
    let scratch = Scratch::new("preflight");
    // A PATH with the fake gcloud and the basics, but no jq.
    let bin = scratch.dir.join("nojq");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["bash", "env", "sha256sum", "curl", "head", "cat"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let target = String::from_utf8(found.stdout).unwrap();
        std::os::unix::fs::symlink(target.trim(), bin.join(tool)).unwrap();
    }
    std::os::unix::fs::symlink(
        Path::new(ROOT).join("tests/deploy/gcloud"),
        bin.join("gcloud"),
    )
    .unwrap();
    let output = scratch.run("deploy.sh", &[], bin.to_str().unwrap(), "test-proj");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("missing tools: jq"), "{stderr}");
    assert!(scratch.calls().is_empty(), "gcloud was called without jq");

    let output = scratch.run("deploy.sh", &[], &scratch.path(), "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("no project"), "{stderr}");

    std::fs::remove_file(scratch.keys_file()).unwrap();
    let output = scratch.run("deploy.sh", &[], &scratch.path(), "test-proj");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("keys file 'api-keys.json' not found"),
        "{stderr}"
    );

    // An invalid configuration is caught by `vertex-proxy check` before anything changes.
    std::fs::write(scratch.keys_file(), r#"[{"id": "a", "key": "short"}]"#).unwrap();
    let output = scratch.run("deploy.sh", &[], &scratch.path(), "test-proj");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("shorter than 16") && stderr.contains("nothing was changed"),
        "{stderr}"
    );

    let mutations: Vec<Vec<String>> = scratch
        .calls()
        .into_iter()
        .filter(|c| is_mutation(c))
        .collect();
    assert!(
        mutations.is_empty(),
        "changed something before failing: {mutations:?}"
    );
}

#[test]
fn teardown_asks_before_deleting() {
    let scratch = Scratch::new("confirm");
    let output = scratch.run("teardown.sh", &[], &scratch.path(), "test-proj");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("pass --yes"));
    assert!(!scratch.calls().iter().any(|c| is_mutation(c)));
}

/// One Dockerfile instruction: its keyword in capitals, and its arguments on one line.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// One build stage: `FROM [--platform=P] IMAGE [AS NAME]`, then its instructions.
#[derive(Debug)]
struct Stage {
    platform: Option<String>,
    image: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    /// The arguments of each of its `keyword` instructions, in order.
    fn all(&self, keyword: &str) -> Vec<&str> {
        (self.instructions.iter())
            .filter(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    }

    /// The arguments of its one `keyword` instruction.
    fn one(&self, keyword: &str) -> &str {
        match self.all(keyword)[..] {
            [args] => args,
            ref found => panic!("{found:?}: not one {keyword} in {:?}", self.image),
        }
    }
}

/// A Dockerfile's stages, read as Docker reads the file: a line whose first non-blank
/// character is `#` is a comment (within a continued instruction too), a line that ends in
/// `\` continues on the next, blank lines are skipped, and only `ARG` may come before the first
/// `FROM`.
fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (part, continues) = match line.strip_suffix('\\') {
            Some(part) => (part.trim(), true),
            None => (line, false),
        };
        if !current.is_empty() && !part.is_empty() {
            current.push(' ');
        }
        current.push_str(part);
        if !continues {
            let (keyword, args) = current
                .split_once(char::is_whitespace)
                .unwrap_or((&current, ""));
            instructions.push(Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_owned(),
            });
            current.clear();
        }
    }
    assert!(
        current.is_empty(),
        "the last instruction continues past the end"
    );
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            let mut platform = None;
            let mut words = Vec::new();
            for word in instruction.args.split_whitespace() {
                match word.strip_prefix("--platform=") {
                    Some(p) => platform = Some(p.to_owned()),
                    None => words.push(word),
                }
            }
            let (image, name) = match words[..] {
                [image] => (image, None),
                [image, r#as, name] if r#as.eq_ignore_ascii_case("as") => (image, Some(name)),
                _ => panic!(
                    "FROM {}: not [--platform=P] IMAGE [AS NAME]",
                    instruction.args
                ),
            };
            stages.push(Stage {
                platform,
                image: image.to_owned(),
                name: name.map(str::to_owned),
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(instruction);
        } else {
            assert_eq!(instruction.keyword, "ARG", "before the first FROM");
        }
    }
    stages
}

/// A COPY's flags, sources and destination.
fn copy_parts(args: &str) -> (Vec<&str>, Vec<&str>, &str) {
    let (flags, paths): (Vec<&str>, Vec<&str>) =
        args.split_whitespace().partition(|w| w.starts_with("--"));
    let (destination, sources) = paths.split_last().expect("COPY SOURCE... DESTINATION");
    assert!(!sources.is_empty(), "COPY {args}: no source");
    (flags, sources.to_vec(), destination)
}

#[test]
fn the_dockerfile_parser_reads_stages_comments_and_continuations() {
    let stages = dockerfile_stages(
        "ARG V=1\n# a comment\nFROM --platform=linux/amd64 rust:1 as build\n  run a \\\n  # inside\n\n  && b\nFROM scratch\nCOPY --from=build /x /y\n",
    );
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(stages[0].image, "rust:1");
    assert_eq!(stages[0].name.as_deref(), Some("build"));
    assert_eq!(stages[0].one("RUN"), "a && b");
    assert_eq!(
        (stages[1].platform.as_ref(), stages[1].name.as_ref()),
        (None, None)
    );
    assert_eq!(
        copy_parts(stages[1].one("COPY")),
        (vec!["--from=build"], vec!["/x"], "/y")
    );
}

#[test]
fn the_dockerfile_builds_like_ci_and_runs_as_nonroot() {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let ci = std::fs::read_to_string(Path::new(ROOT).join(".ci/run")).unwrap();
    let build_command = "cargo build --release --locked";
    assert!(ci.lines().any(|l| l.trim() == build_command));
    let stages = dockerfile_stages(&dockerfile);
    assert!(stages.len() >= 2, "a multi-stage build: {stages:?}");
    // Cloud Run needs linux/amd64: the binary is built for it, and runs on it.
    for stage in &stages {
        assert_eq!(stage.platform.as_deref(), Some("linux/amd64"), "{stage:?}");
    }

    // The runtime: distroless, as its non-root user, running the one binary it copies from
    // the build stage.
    let runtime = stages.last().unwrap();
    assert!(
        runtime.image.starts_with("gcr.io/distroless/") && runtime.image.ends_with(":nonroot"),
        "{}",
        runtime.image
    );
    assert!(runtime.all("USER").last().unwrap().starts_with("nonroot"));
    assert_eq!(runtime.one("EXPOSE"), "8080");
    let binary = "/usr/local/bin/vertex-proxy";
    assert_eq!(runtime.one("ENTRYPOINT"), format!("[\"{binary}\"]"));
    assert!(
        runtime.all("RUN").is_empty(),
        "the runtime image has no shell"
    );
    let (flags, sources, destination) = copy_parts(runtime.one("COPY"));
    assert_eq!(destination, binary);
    let from = flags
        .iter()
        .find_map(|f| f.strip_prefix("--from="))
        .unwrap();
    let build = (stages.iter())
        .find(|s| s.name.as_deref() == Some(from))
        .unwrap_or_else(|| panic!("no stage named {from}"));

    // The build: CI's command, in a Rust at least the crate's rust-version, whose release
    // binary is what the runtime copies.
    let workdir = build.one("WORKDIR");
    assert_eq!(sources, [format!("{workdir}/target/release/vertex-proxy")]);
    let runs = build.all("RUN");
    let last_build = runs.last().unwrap();
    assert!(
        last_build.split("&&").any(|c| c.trim() == build_command),
        "the build stage's last RUN is not CI's build: {last_build}"
    );
    let rust_version = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("rust-version = \"")
                .map(|v| v.trim_end_matches('"').to_owned())
        })
        .unwrap();
    let pinned = (build.image.strip_prefix("rust:"))
        .expect("a rust builder image")
        .split('-')
        .next()
        .unwrap();
    let version = |v: &str| {
        v.split('.')
            .map(|p| p.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert!(
        version(pinned) >= version(&rust_version),
        "{pinned} < rust-version {rust_version}"
    );

    // It copies from the build context only what `deploy --source` uploads: the
    // .gcloudignore allowlist (the_upload_is_an_allowlist_that_no_keys_file_passes).
    let upload = std::fs::read_to_string(Path::new(ROOT).join(".gcloudignore")).unwrap();
    let uploaded: Vec<&str> = (upload.lines())
        .filter_map(|l| l.strip_prefix("!/"))
        .filter(|l| !l.contains('*'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    for stage in &stages {
        for copy in stage.all("COPY") {
            let (flags, sources, _) = copy_parts(copy);
            if flags.iter().any(|f| f.starts_with("--from=")) {
                continue;
            }
            for source in sources {
                let source = source.trim_start_matches("./").trim_end_matches('/');
                assert!(
                    uploaded.contains(&source),
                    "COPY {source}: not in the upload ({uploaded:?})"
                );
            }
        }
    }
    let ignore = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/") && ignore.lines().any(|l| l == ".git/"));
}

#[test]
fn the_upload_is_an_allowlist_that_no_keys_file_passes() {
    // gcloud reads .gcloudignore with .gitignore's rules; git itself says what they keep.
    let dir = std::env::temp_dir().join(format!("vertex-proxy-upload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src/log")).unwrap();
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    let files = [
        "Cargo.toml",
        "Cargo.lock",
        "Dockerfile",
        "src/main.rs",
        "src/log/json.rs",
        "api-keys.json",
        "keys.prod.json",
        "api-keys.json~",
        ".api-keys.json.swp",
        "src/api-keys.json",
        "src/.lib.rs.swp",
        "target/release/vertex-proxy",
        "notes.txt",
        ".env",
    ];
    for file in files {
        std::fs::write(dir.join(file), "x").unwrap();
    }
    std::fs::copy(
        Path::new(ROOT).join(".gcloudignore"),
        dir.join(".gitignore"),
    )
    .unwrap();
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    git(&["init", "-q", "."]);
    let uploaded: Vec<String> = git(&["add", "--all", "--dry-run"])
        .lines()
        .map(|l| {
            l.trim_start_matches("add '")
                .trim_end_matches('\'')
                .to_owned()
        })
        .collect();
    assert_eq!(
        uploaded,
        [
            "Cargo.lock",
            "Cargo.toml",
            "Dockerfile",
            "src/log/json.rs",
            "src/main.rs"
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deploy_builds_its_own_source_from_any_directory_and_survives_any_delimiter() {
    let scratch = Scratch::new("anywhere");
    // Key ids holding the first three delimiters make the fourth, %%, the one chosen.
    let mut entries: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(scratch.keys_file()).unwrap()).unwrap();
    entries[0]["id"] = "ops@@##~~".into();
    std::fs::write(
        scratch.keys_file(),
        serde_json::to_string(&entries).unwrap(),
    )
    .unwrap();
    // Run from a directory that is not the checkout.
    scratch.ok("deploy.sh", &[]);
    let calls = scratch.calls();
    let deploy = calls_with(&calls, &["run", "deploy"]);
    assert!(
        has(deploy[0], &format!("--source={ROOT}")),
        "{:?}",
        deploy[0]
    );
    let env_flag = deploy[0]
        .iter()
        .find(|a| a.starts_with("--update-env-vars="))
        .unwrap();
    assert!(env_flag.starts_with("--update-env-vars=^%%^"), "{env_flag}");
    // The service got every variable whole: its smoke test passed, and its key list has the id.
    let env = std::fs::read_to_string(scratch.dir.join("state/services/vertex-proxy/env")).unwrap();
    assert!(
        env.lines()
            .any(|l| l.starts_with("API_KEYS_JSON=") && l.contains("ops@@##~~")),
        "{env}"
    );
    assert!(env.lines().any(|l| l == "VERTEX_LOCATION=global"), "{env}");
}

#[test]
fn a_keys_file_others_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new("mode");
    let warning = "can be read by your group or by others";
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        std::fs::set_permissions(scratch.keys_file(), std::fs::Permissions::from_mode(mode))
            .unwrap();
        let output = scratch.run("deploy.sh", &["keys"], &scratch.path(), "test-proj");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.contains(warning), warned, "mode {mode:o}: {stderr}");
    }
}

/// Runs the fake gcloud directly, as a person at a terminal would, against `scratch`'s state.
fn gcloud_by_hand(scratch: &Scratch, args: &[&str]) {
    let status = Command::new(Path::new(ROOT).join("tests/deploy/gcloud"))
        .args(args)
        .env("FAKE_GCLOUD_STATE", scratch.dir.join("state"))
        .env("VERTEX_PROXY_BIN", env!("CARGO_BIN_EXE_vertex-proxy"))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn variables_set_by_hand_survive_a_redeploy() {
    let scratch = Scratch::new("by-hand");
    scratch.ok("deploy.sh", &[]);
    let prices = r#"PRICES_JSON={"flash":{"input":0.3,"output":2.5}}"#;
    gcloud_by_hand(
        &scratch,
        &[
            "run",
            "services",
            "update",
            "vertex-proxy",
            "--region=us-central1",
            "--project=test-proj",
            &format!("--update-env-vars=^@@^{prices}"),
        ],
    );
    scratch.ok("deploy.sh", &[]);
    let env = std::fs::read_to_string(scratch.dir.join("state/services/vertex-proxy/env")).unwrap();
    assert!(env.lines().any(|l| l == prices), "{env}");
    // Moving the keys to a secret takes API_KEYS_JSON away, and keeps the rest.
    scratch.ok("deploy.sh", &["--keys-secret", "vp-keys"]);
    let env = std::fs::read_to_string(scratch.dir.join("state/services/vertex-proxy/env")).unwrap();
    assert!(!env.contains("API_KEYS_JSON="), "{env}");
    assert!(env.lines().any(|l| l == prices), "{env}");
}

#[test]
fn rotating_into_a_secret_the_service_does_not_read_is_refused() {
    let scratch = Scratch::new("wrong-secret");
    scratch.ok("deploy.sh", &[]);
    let output = scratch.run(
        "deploy.sh",
        &["keys", "--keys-secret", "vp-keys"],
        &scratch.path(),
        "test-proj",
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not read its keys from secret vp-keys")
            && stderr.contains("its environment, API_KEYS_JSON"),
        "{stderr}"
    );
    assert!(calls_with(&scratch.calls(), &["secrets", "versions", "add"]).is_empty());
    // The other way round: keys in a secret, rotated as if in the environment.
    scratch.ok("deploy.sh", &["--keys-secret", "vp-keys"]);
    let output = scratch.run("deploy.sh", &["keys"], &scratch.path(), "test-proj");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Pass --keys-secret vp-keys"));
    assert!(calls_with(&scratch.calls(), &["run", "services", "update"]).is_empty());
}

#[test]
fn teardown_deletes_only_what_deploy_made() {
    let scratch = Scratch::new("not-ours");
    // Made before, by hand: the service account, a shared secret, and a domain mapping that
    // routes to another service.
    let project = "--project=test-proj";
    gcloud_by_hand(
        &scratch,
        &["iam", "service-accounts", "create", "vertex-proxy", project],
    );
    gcloud_by_hand(&scratch, &["secrets", "create", "shared-keys", project]);
    gcloud_by_hand(
        &scratch,
        &[
            "beta",
            "run",
            "domain-mappings",
            "create",
            "--service=other-service",
            "--domain=llm.example.com",
            project,
        ],
    );
    scratch.ok("deploy.sh", &["--keys-secret", "shared-keys"]);
    let out = scratch.ok(
        "teardown.sh",
        &[
            "--yes",
            "--keys-secret",
            "shared-keys",
            "--domain",
            "llm.example.com",
        ],
    );
    for reason in [
        "skipping domain mapping llm.example.com: it routes to other-service, not vertex-proxy",
        "skipping secret shared-keys: it has no label managed-by=vertex-proxy",
        "skipping service account vertex-proxy@test-proj.iam.gserviceaccount.com and its roles/aiplatform.user binding",
    ] {
        assert!(out.contains(reason), "{reason:?} not in:\n{out}");
    }
    let calls = scratch.calls();
    // The service deploy.sh made is gone; nothing else was deleted.
    assert_eq!(
        calls_with(&calls, &["run", "services", "delete", "vertex-proxy"]).len(),
        1
    );
    for kept in [
        &["secrets", "delete"][..],
        &["iam", "service-accounts", "delete"],
        &["projects", "remove-iam-policy-binding"],
        &["beta", "run", "domain-mappings", "delete"],
    ] {
        assert!(calls_with(&calls, kept).is_empty(), "{kept:?} was called");
    }
    assert!(scratch.dir.join("state/secrets/shared-keys").is_dir());
}

/// A private Cloud Run service that exists before the deploy, as `name` in the fake's state.
fn private_service(scratch: &Scratch, name: &str) {
    let dir = scratch.dir.join(format!("state/services/{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("url"),
        format!("https://{name}-abc-uc.a.run.app\n"),
    )
    .unwrap();
}

fn invokers(scratch: &Scratch, name: &str) -> Vec<String> {
    std::fs::read_to_string(scratch.dir.join(format!("state/services/{name}/invokers")))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn invoker_of_grants_run_invoker_and_teardown_removes_exactly_those_grants() {
    let scratch = Scratch::new("invoker");
    let help = scratch.ok("deploy.sh", &["--help"]);
    assert!(help.contains("--invoker-of SVC[,SVC]"), "{help}");
    let member = "serviceAccount:vertex-proxy@test-proj.iam.gserviceaccount.com";
    for name in ["gemma", "llama", "qwen", "shared"] {
        private_service(&scratch, name);
    }
    // `shared` let the proxy in before deploy.sh did: that grant is not deploy.sh's.
    gcloud_by_hand(
        &scratch,
        &[
            "run",
            "services",
            "add-iam-policy-binding",
            "shared",
            "--region=us-central1",
            &format!("--member={member}"),
            "--role=roles/run.invoker",
        ],
    );

    // A service that does not exist stops the deploy before any change.
    let output = scratch.run(
        "deploy.sh",
        &["--invoker-of", "gemma,missing"],
        &scratch.path(),
        "test-proj",
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("no Cloud Run service 'missing' in us-central1"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !scratch
            .calls()
            .iter()
            .any(|c| is_mutation(c) && !has(c, "shared"))
    );
    let bad = scratch.run(
        "deploy.sh",
        &["--invoker-of", "Gemma!"],
        &scratch.path(),
        "test-proj",
    );
    assert!(!bad.status.success());

    let out = scratch.ok("deploy.sh", &["--invoker-of", "gemma, llama,shared"]);
    assert!(
        out.contains("invoker of       gemma llama shared (in us-central1)"),
        "{out}"
    );
    for name in ["gemma", "llama", "shared"] {
        assert_eq!(invokers(&scratch, name), [member], "{name}");
    }
    let grants = calls_with(
        &scratch.calls(),
        &["run", "services", "add-iam-policy-binding"],
    )
    .into_iter()
    .filter(|c| has(c, "--region=us-central1") && has(c, "--role=roles/run.invoker"))
    .count();
    assert_eq!(grants, 3, "gemma and llama, and shared by hand");
    let env = std::fs::read_to_string(scratch.dir.join("state/services/vertex-proxy/env")).unwrap();
    assert!(env.lines().any(|l| l == "INVOKER_OF=gemma,llama"), "{env}");

    // A redeploy without the flag leaves the grants and the record alone...
    scratch.ok("deploy.sh", &[]);
    let env = std::fs::read_to_string(scratch.dir.join("state/services/vertex-proxy/env")).unwrap();
    assert!(env.lines().any(|l| l == "INVOKER_OF=gemma,llama"), "{env}");
    // ...and one with it makes the list exact: llama's grant goes, qwen's comes, and gemma's,
    // removed by hand meanwhile, is made again.
    gcloud_by_hand(
        &scratch,
        &[
            "run",
            "services",
            "remove-iam-policy-binding",
            "gemma",
            "--region=us-central1",
            &format!("--member={member}"),
            "--role=roles/run.invoker",
        ],
    );
    let out = scratch.ok("deploy.sh", &["--invoker-of=gemma,qwen"]);
    assert!(
        out.contains("on gemma to vertex-proxy@test-proj.iam.gserviceaccount.com again"),
        "{out}"
    );
    assert_eq!(invokers(&scratch, "gemma"), [member]);
    assert!(invokers(&scratch, "llama").is_empty());
    assert_eq!(invokers(&scratch, "qwen"), [member]);
    let env = std::fs::read_to_string(scratch.dir.join("state/services/vertex-proxy/env")).unwrap();
    assert!(env.lines().any(|l| l == "INVOKER_OF=gemma,qwen"), "{env}");

    // Teardown removes exactly the recorded grants: not shared's, which it did not make.
    let out = scratch.ok("teardown.sh", &["--yes"]);
    assert!(out.contains("removing roles/run.invoker on gemma"), "{out}");
    for name in ["gemma", "qwen"] {
        assert!(invokers(&scratch, name).is_empty(), "{name}");
    }
    assert_eq!(invokers(&scratch, "shared"), [member]);
}

#[test]
fn a_hand_edited_invoker_record_is_refused_and_no_name_becomes_a_flag() {
    let scratch = Scratch::new("invoker-record");
    let member = "serviceAccount:vertex-proxy@test-proj.iam.gserviceaccount.com";
    for name in ["gemma", "victim"] {
        private_service(&scratch, name);
    }
    scratch.ok("deploy.sh", &["--invoker-of", "gemma"]);
    // Someone else lets the proxy call `victim`; then the record is edited by hand.
    let grant = format!("--member={member}");
    gcloud_by_hand(
        &scratch,
        &[
            "run",
            "services",
            "add-iam-policy-binding",
            "victim",
            "--region=us-central1",
            &grant,
            "--role=roles/run.invoker",
        ],
    );
    let record = |value: &str| {
        let update = format!("--update-env-vars=^;^INVOKER_OF={value}");
        gcloud_by_hand(
            &scratch,
            &[
                "run",
                "services",
                "update",
                "vertex-proxy",
                "--region=us-central1",
                &update,
            ],
        );
    };
    record("gemma,victim,--region=europe-west1");

    // Neither script trusts the record, and neither changes anything.
    for (script, args) in [
        ("teardown.sh", &["--yes"][..]),
        ("deploy.sh", &["--invoker-of", "gemma"]),
    ] {
        let before = scratch.calls().len();
        let output = scratch.run(script, args, &scratch.path(), "test-proj");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{script}: {stderr}");
        assert!(
            stderr.contains("INVOKER_OF record on vertex-proxy holds '--region=europe-west1', which is not a Cloud Run service name"),
            "{script}: {stderr}"
        );
        assert!(stderr.contains("nothing was changed"), "{script}: {stderr}");
        let calls = scratch.calls();
        assert!(!calls[before..].iter().any(|c| is_mutation(c)), "{script}");
        assert!(
            !calls[before..]
                .iter()
                .any(|c| has(c, "--region=europe-west1")),
            "{script}"
        );
    }
    assert_eq!(invokers(&scratch, "gemma"), [member]);
    assert_eq!(invokers(&scratch, "victim"), [member]);
    assert!(scratch.dir.join("state/services/vertex-proxy/url").exists());

    // Put right, the record is followed; every name reaches gcloud after `--`, where it
    // cannot be read as a flag.
    record("gemma");
    let before = scratch.calls().len();
    scratch.ok("teardown.sh", &["--yes"]);
    assert!(invokers(&scratch, "gemma").is_empty());
    assert_eq!(invokers(&scratch, "victim"), [member]);
    let calls = scratch.calls();
    let named: Vec<&Vec<String>> = calls[before..]
        .iter()
        .filter(|c| c[0] != "config" && c[0] != "beta")
        .collect();
    assert!(named.len() >= 6, "{named:?}");
    for call in named {
        assert_eq!(call[call.len() - 2], "--", "{call:?}");
    }
}
