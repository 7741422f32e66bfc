//! The admin API and CLI, run as an operator would: a real `edgeward init`,
//! a real `edgeward serve` in a child process, the admin socket in a temp
//! directory, and the `edgeward` admin commands against it.

use edgeward_tests::{HELLO_WASM, Upstream, digest, respond};
use serde_json::Value;
use std::io::{BufRead as _, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

const DIGEST_2: &str = "sha256:cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed";
const UPSTREAM_KEY: &str = "admin-test-upstream-key-0123456789";

fn edgeward() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeward"));
    cmd.env_remove("EDGEWARD_LOG")
        .env_remove("EDGEWARD_ADMIN_SOCKET")
        .env_remove("EDGEWARD_ADMIN_CREDENTIAL");
    cmd
}

/// What a command did.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }

    /// Refused by the API: exit code 2 and `error: <message>` naming what
    /// was wrong.
    fn refused(&self, expect: &str) {
        assert_eq!(self.code, Some(2), "{}{}", self.stdout, self.stderr);
        assert!(
            self.stderr.starts_with("error: ") && self.stderr.contains(expect),
            "expected {expect:?} in:\n{}",
            self.stderr
        );
    }
}

fn run(mut cmd: Command) -> Out {
    let out = cmd.output().expect("run edgeward");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A data directory made by `edgeward init` and a running `edgeward serve`
/// on it. Killed and removed on drop.
struct Server {
    child: Child,
    // Kept open: the server must never write to a closed pipe.
    _stdout: std::io::BufReader<ChildStdout>,
    dir: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    url: String,
    credential: String,
}

impl Server {
    /// `config` is the TOML the registry is seeded with.
    fn start(name: &str, config: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("ew-admin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let data = dir.join("data");
        let mut init = edgeward();
        init.args(["init", "--data-dir"]).arg(&data);
        let out = run(init);
        out.ok();
        assert!(out.stdout.contains("admin-credential"), "{}", out.stdout);
        let credential_file = data.join("admin-credential");
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&credential_file)
                .expect("credential file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(data.join("edgeward.db").exists());
        let credential = std::fs::read_to_string(&credential_file)
            .expect("credential")
            .trim()
            .to_owned();
        assert_eq!(credential.len(), 64);
        let config_path = dir.join("edgeward.toml");
        std::fs::write(&config_path, config).expect("config");
        let socket = dir.join("admin.sock");
        let (child, stdout, url) = spawn_serve(&config_path, &data, &socket);
        Server {
            child,
            _stdout: stdout,
            dir,
            data,
            socket,
            url,
            credential,
        }
    }

    /// An admin command as the first admin.
    fn admin(&self, args: &[&str]) -> Out {
        self.as_principal(&self.credential, args)
    }

    /// An admin command with this credential.
    fn as_principal(&self, credential: &str, args: &[&str]) -> Out {
        let mut cmd = edgeward();
        cmd.args(args)
            .env("EDGEWARD_ADMIN_SOCKET", &self.socket)
            .env("EDGEWARD_ADMIN_CREDENTIAL", credential);
        run(cmd)
    }

    /// The last audit record before this call.
    fn last_audit(&self) -> Value {
        let page = self
            .admin(&["audit", "tail", "-n", "1", "--json"])
            .ok()
            .json();
        page["records"][0].clone()
    }

    /// Devices, agents and principals, as JSON: to compare before and after.
    fn registry(&self) -> (Value, Value, Value) {
        (
            self.admin(&["device", "list", "--json"]).ok().json(),
            self.admin(&["agent", "list", "--json"]).ok().json(),
            self.admin(&["admin", "list", "--json"]).ok().json(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_serve(
    config: &Path,
    data: &Path,
    socket: &Path,
) -> (Child, std::io::BufReader<ChildStdout>, String) {
    let mut child = edgeward()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .arg("--admin-socket")
        .arg(socket)
        .env("EDGEWARD_ADMIN_TEST_KEY", UPSTREAM_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("no listening line: {line:?}"))
        .to_owned();
    (child, stdout, url)
}

/// One raw HTTP/1.1 request on the admin socket: for what the CLI never
/// sends (unknown fields, no credential, a token).
fn raw(
    socket: &Path,
    credential: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut stream = UnixStream::connect(socket).expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    if let Some(c) = credential {
        req.push_str(&format!("authorization: Bearer {c}\r\n"));
    }
    let body = body.unwrap_or("");
    if method == "POST" {
        req.push_str("content-type: application/json\r\n");
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("http answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, serde_json::from_str(body).expect("json body"))
}

/// A device key made by `edgeward keygen`, removed on drop.
struct DeviceKey {
    dir: PathBuf,
    key: PathBuf,
}

impl Drop for DeviceKey {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The seed config: one device (with a key made by `edgeward keygen`), one
/// grant on `origin`, agent `hello` allowed on the device.
fn config(dir_hint: &str, origin: &str) -> (String, DeviceKey) {
    let keydir =
        std::env::temp_dir().join(format!("ew-admin-key-{dir_hint}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&keydir);
    std::fs::create_dir_all(&keydir).expect("dir");
    let key = keydir.join("device.key");
    let mut keygen = edgeward();
    keygen.args(["keygen", "--out"]).arg(&key);
    let out = run(keygen);
    out.ok();
    let public = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("public_key = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("public key line")
        .to_owned();
    let text = format!(
        r#"
[[device]]
id = "dev-1"
owner = "ops@edgeward.invalid"
public_key = "{public}"

[[grant]]
name = "api"
origin = "{origin}"
methods = ["GET"]
path_prefixes = ["/v1/"]
credential = {{ kind = "header", name = "x-api-key" }}
secret = {{ env = "EDGEWARD_ADMIN_TEST_KEY" }}

[[agent]]
name = "hello"
owner = "tests@edgeward.invalid"
digests = ["{}"]
grants = ["api"]
devices = ["dev-1"]
"#,
        digest(HELLO_WASM)
    );
    (text, DeviceKey { dir: keydir, key })
}

/// A real access token of this backend: minted with its signing key, for
/// its issuer and audience, for agent `hello` at its current generation.
fn access_token(data: &Path) -> String {
    let hex_seed = std::fs::read_to_string(data.join("signing-key")).expect("signing key");
    let mut seed = [0u8; 32];
    hex::decode_to_slice(hex_seed.trim(), &mut seed).expect("hex");
    let settings = edgeward_core::config::BackendSettings::default();
    let issuer = edgeward_core::token::TokenIssuer::new(&seed, settings.issuer, settings.audience)
        .expect("issuer");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    issuer
        .mint(&edgeward_core::token::Mint {
            sub: "spiffe://edgeward.local/agent/hello/instance/0011".into(),
            instance_spiffe: "spiffe://edgeward.local/agent/hello/instance/0011".into(),
            device_spiffe: "spiffe://edgeward.local/device/dev-1".into(),
            agent: "hello".into(),
            scope: vec![edgeward_core::grant::GrantName::new("api").expect("grant")],
            generation: 1,
            jkt: "x".repeat(43),
            now,
            lifetime: 300,
            jti: "00112233445566778899aabbccddeeff".into(),
        })
        .expect("mint")
}

#[test]
fn the_admin_api_refuses_missing_and_wrong_credentials_wrong_roles_and_access_tokens() {
    let (text, _) = config("auth", "http://127.0.0.1:9");
    let server = Server::start("auth", &text);
    {
        use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
        let meta = std::fs::metadata(&server.socket).expect("socket");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    let (status, v) = raw(&server.socket, None, "GET", "/v1/devices", None);
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    let (status, _) = raw(&server.socket, Some("0123"), "GET", "/v1/devices", None);
    assert_eq!(status, 401);
    server
        .as_principal(&"0".repeat(64), &["device", "list"])
        .refused("the admin credential is not known");
    let mut no_credential = edgeward();
    no_credential
        .args(["device", "list"])
        .env("EDGEWARD_ADMIN_SOCKET", &server.socket);
    run(no_credential).refused("no admin credential");

    // A real access token of this backend, and any JWT-shaped string.
    let token = access_token(&server.data);
    for t in [token.as_str(), "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.eA"] {
        let (status, v) = raw(
            &server.socket,
            Some(t),
            "POST",
            "/v1/revoke",
            Some(r#"{"all":true}"#),
        );
        assert_eq!(status, 401, "{v}");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("access tokens never authorize admin calls")),
            "{v}"
        );
    }
    server
        .as_principal(&token, &["revoke", "--all"])
        .refused("access tokens never authorize admin calls");
    let record = server.last_audit();
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["admin"], Value::Null);
    assert!(!record.to_string().contains(&token));

    // An auditor reads but changes nothing.
    let out = server.admin(&[
        "admin",
        "add",
        "--name",
        "eve@edgeward.invalid",
        "--role",
        "auditor",
    ]);
    out.ok();
    let auditor = out
        .stdout
        .lines()
        .nth(1)
        .expect("credential line")
        .trim()
        .to_owned();
    assert_eq!(auditor.len(), 64);
    let before = server.registry();
    server.as_principal(&auditor, &["device", "list"]).ok();
    server.as_principal(&auditor, &["inventory", "--json"]).ok();
    server.as_principal(&auditor, &["audit", "verify"]).ok();
    server
        .as_principal(&auditor, &["revoke", "--all", "--reason", "no"])
        .refused("revoke needs the admin role");
    let record = server.last_audit();
    assert_eq!(
        (&record["decision"], &record["admin"]),
        (&Value::from("deny"), &Value::from("eve@edgeward.invalid"))
    );
    server
        .as_principal(&auditor, &["agent", "deprovision", "--name", "hello"])
        .refused("needs the admin role");
    server
        .as_principal(
            &auditor,
            &["admin", "add", "--name", "mallory", "--role", "admin"],
        )
        .refused("needs the admin role");
    // An approver has nothing here yet.
    let out = server.admin(&[
        "admin", "add", "--name", "paul", "--role", "approver", "--agent", "hello",
    ]);
    out.ok();
    let approver = out
        .stdout
        .lines()
        .nth(1)
        .expect("credential line")
        .trim()
        .to_owned();
    server
        .as_principal(&approver, &["device", "list"])
        .refused("needs the admin or auditor role; paul has the role(s) approver");
    let after = server.registry();
    assert_eq!(before.0, after.0);
    assert_eq!(before.1, after.1);
    // Only paul was added meanwhile.
    assert_eq!(after.2["admins"].as_array().map(Vec::len), Some(3));
    let inventory = server.admin(&["inventory", "--json"]).ok().json();
    assert_eq!(
        inventory["agents"][0]["revocation"]["last_revocation"],
        Value::Null
    );

    // The socket is not taken over by a second server, nor is a file
    // that is not a socket replaced.
    let config_path = server.dir.join("edgeward.toml");
    let mut second = edgeward();
    second
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config_path)
        .arg("--data-dir")
        .arg(&server.data)
        .arg("--admin-socket")
        .arg(&server.socket)
        .env("EDGEWARD_ADMIN_TEST_KEY", UPSTREAM_KEY);
    run(second).refused("in use by a running server");
    let file = server.dir.join("not-a-socket");
    std::fs::write(&file, "keep me").expect("file");
    let mut third = edgeward();
    third
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config_path)
        .arg("--data-dir")
        .arg(&server.data)
        .arg("--admin-socket")
        .arg(&file)
        .env("EDGEWARD_ADMIN_TEST_KEY", UPSTREAM_KEY);
    run(third).refused("is not a socket");
    assert_eq!(std::fs::read_to_string(&file).expect("kept"), "keep me");
}

#[test]
fn every_admin_command_refuses_bad_names_ids_and_fields_and_changes_nothing() {
    let (text, _) = config("input", "http://127.0.0.1:9");
    let server = Server::start("input", &text);
    let d = digest(HELLO_WASM).to_string();
    let bad_toml = server.dir.join("bad.toml");
    std::fs::write(
        &bad_toml,
        "[[grant]]\nname = \"x\"\norigin = \"https://x.example\"\nmethods = [\"GET\"]\npath_prefixes = [\"/\"]\ncredential = { kind = \"bearer\" }\nsecret = \"sk_live_pasted_by_mistake\"\n",
    )
    .expect("toml");
    let bad_toml = bad_toml.display().to_string();
    let before = server.registry();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "device",
                "enroll",
                "--id",
                "Bad Id",
                "--owner",
                "o",
                "--public-key",
                "ed25519:x",
            ],
            "id: device names must be",
        ),
        (
            vec![
                "device",
                "enroll",
                "--id",
                "embedded",
                "--owner",
                "o",
                "--public-key",
                "ed25519:x",
            ],
            "id: \"embedded\" is reserved",
        ),
        (
            vec![
                "device",
                "enroll",
                "--id",
                "dev-9",
                "--owner",
                "o",
                "--public-key",
                "rsa:abc",
            ],
            "public_key: ",
        ),
        (
            vec![
                "device",
                "enroll",
                "--id",
                "dev-1",
                "--owner",
                "o",
                "--public-key",
                "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            ],
            "device dev-1 already exists",
        ),
        (
            vec!["device", "revoke", "--id", "../etc"],
            "id: device names must be",
        ),
        (vec!["device", "revoke", "--id", "ghost"], "no device ghost"),
        (
            vec!["device", "invite", "--owner", "ops", "--ttl", "5"],
            "ttl_s: must be between",
        ),
        (
            vec!["device", "invite", "--owner", " "],
            "owner: must be 1 to 200 bytes",
        ),
        (
            vec![
                "agent", "register", "--name", "Bad!", "--owner", "o", "--digest", &d,
            ],
            "name: agent names must be",
        ),
        (
            vec![
                "agent", "register", "--name", "ok", "--owner", "o", "--digest", "sha1:abc",
            ],
            "digests: entry 1: ",
        ),
        (
            vec![
                "agent", "register", "--name", "ok", "--owner", "o", "--digest", &d, "--grant",
                "nope",
            ],
            "grants: no grant nope exists",
        ),
        (
            vec![
                "agent", "register", "--name", "ok", "--owner", "o", "--digest", &d, "--device",
                "ghost",
            ],
            "devices: no device ghost is enrolled",
        ),
        (
            vec![
                "agent",
                "register",
                "--name",
                "ok",
                "--owner",
                "o",
                "--digest",
                &d,
                "--max-token-lifetime",
                "0",
            ],
            "max_token_lifetime_s: must be between 1 and 86400",
        ),
        (
            vec![
                "agent", "register", "--name", "hello", "--owner", "o", "--digest", &d,
            ],
            "agent hello already exists",
        ),
        (
            vec!["agent", "show", "--name", "BAD"],
            "name: agent names must be",
        ),
        (vec!["agent", "show", "--name", "ghost"], "no agent ghost"),
        (
            vec!["agent", "update", "--name", "hello"],
            "nothing to change",
        ),
        (
            vec!["agent", "update", "--name", "ghost", "--owner", "x"],
            "no agent ghost",
        ),
        (
            vec!["agent", "update", "--name", "hello", "--grant", "Nope!"],
            "grants: entry 1: grant names must be",
        ),
        (
            vec!["agent", "review", "--name", "a b"],
            "name: agent names must be",
        ),
        (
            vec!["agent", "deprovision", "--name", "ghost"],
            "no agent ghost",
        ),
        (
            vec!["revoke", "--agent", "Bad"],
            "agent: agent names must be",
        ),
        (vec!["revoke", "--agent", "ghost"], "no agent ghost"),
        (vec!["revoke", "--device", "ghost"], "no device ghost"),
        (
            vec!["revoke", "--token", "a b"],
            "token: must be 1 to 128 characters",
        ),
        (
            vec!["revoke", "--instance", ""],
            "instance: must be 1 to 128 characters",
        ),
        (vec!["import", &bad_toml], "toml: config line 7"),
        (
            vec!["admin", "add", "--name", "", "--role", "auditor"],
            "name: must be 1 to 200 bytes",
        ),
        (
            vec!["audit", "verify", "--expected-head", "12"],
            "expected_head: must be SEQ:HASH",
        ),
    ];
    for (args, expect) in &cases {
        let out = server.admin(args);
        out.refused(expect);
        assert!(!out.stderr.contains("sk_live"), "{}", out.stderr);
        let record = server.last_audit();
        assert_eq!(record["decision"], "deny", "{args:?}: {record}");
        assert_eq!(record["admin"], "admin", "{args:?}");
        let reason = record["reason"].as_str().unwrap_or_default();
        let action = match args[0] {
            "device" | "agent" | "admin" | "audit" => format!("{} {}", args[0], args[1]),
            other => other.to_owned(),
        };
        assert!(reason.starts_with(&action), "{args:?}: {reason}");
        assert!(!reason.contains("sk_live"), "{reason}");
    }

    // Unknown fields, on every route that takes a body.
    for path in [
        "/v1/admins/add",
        "/v1/devices/enroll",
        "/v1/devices/revoke",
        "/v1/devices/invite",
        "/v1/agents/register",
        "/v1/agents/update",
        "/v1/agents/review",
        "/v1/agents/deprovision",
        "/v1/revoke",
        "/v1/import",
    ] {
        let (status, v) = raw(
            &server.socket,
            Some(&server.credential),
            "POST",
            path,
            Some(r#"{"colour":"red"}"#),
        );
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["field"], "colour", "{path}: {v}");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("unknown field")),
            "{path}: {v}"
        );
        assert_eq!(server.last_audit()["decision"], "deny");
    }
    for path in [
        "/v1/devices",
        "/v1/agents/show?name=hello",
        "/v1/inventory",
        "/v1/audit",
    ] {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, v) = raw(
            &server.socket,
            Some(&server.credential),
            "GET",
            &format!("{path}{sep}colour=red"),
            None,
        );
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some("colour")),
            "{path}: {v}"
        );
    }
    // A value of the wrong type is named by its field.
    let (status, v) = raw(
        &server.socket,
        Some(&server.credential),
        "POST",
        "/v1/devices/invite",
        Some(r#"{"owner":"ops","ttl_s":"an hour"}"#),
    );
    assert_eq!((status, v["field"].as_str()), (400, Some("ttl_s")), "{v}");

    assert_eq!(
        before,
        server.registry(),
        "a refused request changed the registry"
    );
    let inventory = server.admin(&["inventory", "--json"]).ok().json();
    assert_eq!(
        inventory["agents"][0]["revocation"]["last_revocation"],
        Value::Null
    );
    assert_eq!(inventory["agents"][0]["generation"], 1);
    server.admin(&["audit", "verify"]).ok();
}

#[test]
fn agent_lifecycle_inventory_and_audit_verify() {
    let (text, _) = config("life", "http://127.0.0.1:9");
    let server = Server::start("life", &text);
    let d1 = digest(HELLO_WASM).to_string();
    let out = server.admin(&[
        "agent",
        "register",
        "--name",
        "bot",
        "--owner",
        "alice@edgeward.invalid",
        "--description",
        "a test agent",
        "--digest",
        &d1,
        "--grant",
        "api",
        "--device",
        "dev-1",
    ]);
    out.ok();
    assert!(out.stdout.contains("generation 1"), "{}", out.stdout);
    let show = |server: &Server| {
        server
            .admin(&["agent", "show", "--name", "bot", "--json"])
            .ok()
            .json()
    };
    let id = show(&server)["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 32);

    // Rights unchanged: same generation. New digests: the next one.
    server
        .admin(&[
            "agent",
            "update",
            "--name",
            "bot",
            "--owner",
            "bob@edgeward.invalid",
        ])
        .ok();
    assert_eq!(show(&server)["generation"], 1);
    let out = server.admin(&[
        "agent", "update", "--name", "bot", "--digest", &d1, "--digest", DIGEST_2,
    ]);
    out.ok();
    assert!(out.stdout.contains("generation 1 -> 2"), "{}", out.stdout);
    let agent = show(&server);
    assert_eq!(agent["generation"], 2);
    assert_eq!(agent["owner"], "bob@edgeward.invalid");
    assert_eq!(agent["id"], id.as_str(), "the id is immutable");
    // Dropping the device is a change of rights too.
    server
        .admin(&["agent", "update", "--name", "bot", "--no-devices"])
        .ok();
    assert_eq!(show(&server)["generation"], 3);

    let inventory = server.admin(&["inventory", "--json"]).ok().json();
    let bot = inventory["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "bot"))
        .expect("bot in the inventory")
        .clone();
    // 1. credentials, 2. systems, 3. last review, 4. how it is revoked.
    assert_eq!(bot["credentials"][0]["grant"], "api");
    assert_eq!(
        bot["credentials"][0]["secret_source"],
        "environment variable EDGEWARD_ADMIN_TEST_KEY"
    );
    assert_eq!(bot["systems"][0]["origin"], "http://127.0.0.1:9");
    assert_eq!(bot["systems"][0]["methods"][0], "GET");
    assert_eq!(bot["review"]["last_reviewed_at"], Value::Null);
    assert_eq!(bot["review"]["overdue"], true);
    assert_eq!(bot["revocation"]["live_instances"], serde_json::json!([]));
    assert_eq!(bot["revocation"]["outstanding_tokens"], 0);
    assert_eq!(bot["revocation"]["last_revocation"], Value::Null);
    assert_eq!(bot["revocation"]["last_stop_seconds"], Value::Null);
    assert_eq!(inventory["review_max_age_days"], 90);

    server.admin(&["agent", "review", "--name", "bot"]).ok();
    let agent = show(&server);
    assert_eq!(agent["last_reviewed_by"], "admin");
    assert_eq!(agent["generation"], 3, "a review changes no rights");
    let inventory = server
        .admin(&["inventory", "--json", "--review-max-age-days", "30"])
        .ok()
        .json();
    let bot = &inventory["agents"][0];
    assert_eq!(bot["name"], "bot");
    assert_eq!(bot["review"]["overdue"], false);
    assert_eq!(bot["review"]["age_days"], 0);
    let table = server.admin(&["inventory"]).ok().stdout.clone();
    assert!(
        table.contains("bot") && table.contains("OVERDUE"),
        "{table}"
    );

    // Deprovision: gone (show says so), a tombstone, and a re-registration
    // starts above every generation the name had.
    let out = server.admin(&["agent", "deprovision", "--name", "bot"]);
    out.ok();
    assert!(out.stdout.contains("above generation 3"), "{}", out.stdout);
    server
        .admin(&["agent", "show", "--name", "bot"])
        .refused("no agent bot: it was deprovisioned");
    let agents = server.admin(&["agent", "list", "--json"]).ok().json();
    assert!(
        agents["agents"]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x["name"] != "bot"))
    );
    let out = server.admin(&[
        "agent", "register", "--name", "bot", "--owner", "alice", "--digest", &d1,
    ]);
    out.ok();
    let agent = show(&server);
    assert_eq!(agent["generation"], 4);
    assert_ne!(agent["id"], id.as_str(), "a new identity");

    // Every action above is in the audit log, with who did it; the log
    // verifies, and so does its exported head.
    let export = server.admin(&["audit", "export", "--json"]).ok().json();
    let records = export["records"].as_array().expect("records").clone();
    for action in [
        "agent register bot at generation 1",
        "agent update bot: generation 1 -> 2",
        "agent review bot",
        "agent deprovision bot (last generation 3)",
        "agent register bot at generation 4",
    ] {
        assert!(
            records.iter().any(|r| r["reason"] == action
                && r["admin"] == "admin"
                && r["decision"] == "allow"
                && r["kind"] == "admin"),
            "no audit record {action:?}"
        );
    }
    let head = format!(
        "{}:{}",
        export["head"]["seq"],
        export["head"]["hash"].as_str().expect("hash")
    );
    assert_eq!(export["head"]["seq"], records.len());
    let out = server.admin(&["audit", "verify"]);
    out.ok();
    assert!(out.stdout.starts_with("audit log intact"), "{}", out.stdout);
    server
        .admin(&["audit", "verify", "--expected-head", &head])
        .ok();
    let wrong = format!("{}:{}", export["head"]["seq"], "0".repeat(64));
    let out = server.admin(&["audit", "verify", "--expected-head", &wrong]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("NOT intact"), "{}", out.stdout);
    let tail = server
        .admin(&["audit", "tail", "-n", "3"])
        .ok()
        .stdout
        .clone();
    assert!(
        tail.starts_with("SEQ") && tail.lines().count() == 4,
        "{tail}"
    );

    // Re-initialising keeps the principals and their credentials.
    let mut init = edgeward();
    init.args(["init", "--force", "--data-dir"])
        .arg(&server.data);
    let out = run(init);
    out.ok();
    assert!(
        out.stdout.contains("already has admin principals"),
        "{}",
        out.stdout
    );
    let kept = std::fs::read_to_string(server.data.join("admin-credential")).expect("kept");
    assert_eq!(kept.trim(), server.credential);
    server.admin(&["admin", "whoami"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_agent_through_the_cli_refuses_the_next_exchange() {
    let upstream = Upstream::start(|r| {
        let ok = r.headers.get("x-api-key").map(|v| v.as_bytes()) == Some(UPSTREAM_KEY.as_bytes());
        respond(
            if ok { 200 } else { 401 },
            &[],
            if ok { "admin ok" } else { "no" },
        )
    })
    .await;
    let origin = upstream.origin();
    let task = format!("{origin}/v1/hi");
    tokio::task::spawn_blocking(move || {
        let (text, key) = config("revoke", &origin);
        let server = Server::start("revoke", &text);
        let run_agent = || {
            let mut cmd = edgeward();
            cmd.args(["run", "--backend", &server.url, "--ca"])
                .arg(server.data.join("ca.pem"))
                .args(["--device", "dev-1", "--device-key"])
                .arg(&key.key)
                .args(["--agent", "hello", "--task", &task, HELLO_WASM]);
            run(cmd)
        };
        let out = run_agent();
        out.ok();
        assert_eq!(out.stdout.trim(), "admin ok");
        let inventory = server.admin(&["inventory", "--json"]).ok().json();
        let hello = &inventory["agents"][0];
        assert_eq!(
            hello["revocation"]["live_instances"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        assert_eq!(hello["revocation"]["outstanding_tokens"], 1);

        let out = server.admin(&["revoke", "--agent", "hello", "--reason", "incident 42"]);
        out.ok();
        assert!(out.stdout.contains("revoked agent hello"), "{}", out.stdout);

        let out = run_agent();
        assert_ne!(
            out.code,
            Some(0),
            "ran after the revocation:\n{}",
            out.stdout
        );
        assert!(
            out.stderr.contains("agent hello was revoked"),
            "stderr:\n{}",
            out.stderr
        );
        let page = server
            .admin(&["audit", "tail", "-n", "10", "--json"])
            .ok()
            .json();
        let records = page["records"].as_array().expect("records");
        assert!(
            records.iter().any(|r| r["kind"] == "admin"
                && r["reason"] == "revoke agent hello: incident 42"
                && r["agent"] == "hello"
                && r["admin"] == "admin"),
            "{page}"
        );
        assert!(
            records
                .iter()
                .any(|r| r["kind"] == "exchange" && r["decision"] == "deny"),
            "{page}"
        );
        let inventory = server.admin(&["inventory", "--json"]).ok().json();
        let hello = &inventory["agents"][0];
        assert_eq!(hello["revocation"]["outstanding_tokens"], 0);
        assert_eq!(hello["revocation"]["last_revocation"]["kind"], "agent");
        assert_eq!(
            hello["revocation"]["last_revocation"]["reason"],
            "incident 42"
        );
        server.admin(&["audit", "verify"]).ok();
    })
    .await
    .expect("join");
    assert_eq!(
        upstream.received().len(),
        1,
        "only the call before the revocation"
    );
}

impl Server {
    /// SIGKILL the server (no shutdown of any kind) and start it again on
    /// the same data directory.
    fn kill_9_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
        let config = self.dir.join("edgeward.toml");
        let (child, stdout, url) = spawn_serve(&config, &self.data, &self.socket);
        self.child = child;
        self._stdout = stdout;
        self.url = url;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_survives_kill_9_right_after_it_was_acknowledged() {
    let upstream = Upstream::start(|_| respond(200, &[], "ok")).await;
    let origin = upstream.origin();
    let task = format!("{origin}/v1/hi");
    tokio::task::spawn_blocking(move || {
        let (text, key) = config("kill9", &origin);
        let mut server = Server::start("kill9", &text);
        let run_agent = |server: &Server| {
            let mut cmd = edgeward();
            cmd.args(["run", "--backend", &server.url, "--ca"])
                .arg(server.data.join("ca.pem"))
                .args(["--device", "dev-1", "--device-key"])
                .arg(&key.key)
                .args(["--agent", "hello", "--task", &task, HELLO_WASM]);
            run(cmd)
        };
        run_agent(&server).ok();
        let out = server.admin(&["keys", "rotate"]);
        out.ok();
        assert!(out.stdout.contains("new signing key"), "{}", out.stdout);

        // Acknowledged, then SIGKILL at once.
        server
            .admin(&["revoke", "--device", "dev-1", "--reason", "stolen"])
            .ok();
        server.kill_9_and_restart();

        let out = run_agent(&server);
        assert_ne!(
            out.code,
            Some(0),
            "ran after the revocation and restart:\n{}",
            out.stdout
        );
        assert!(
            out.stderr.contains("device dev-1 was revoked"),
            "stderr:\n{}",
            out.stderr
        );
        let devices = server.admin(&["device", "list", "--json"]).ok().json();
        assert!(devices.to_string().contains("revoked"), "{devices}");
        // The audit log survived the kill too, intact.
        server.admin(&["audit", "verify"]).ok();
    })
    .await
    .expect("join");
    assert_eq!(
        upstream.received().len(),
        1,
        "only the call before the revocation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_enrols_itself_with_a_one_time_code() {
    let upstream = Upstream::start(|_| respond(200, &[], "ok")).await;
    let origin = upstream.origin();
    tokio::task::spawn_blocking(move || {
        let (text, _) = config("invite", &origin);
        let server = Server::start("invite", &text);
        let out = server.admin(&["device", "invite", "--owner", "fleet-team"]);
        out.ok();
        let code = out
            .stdout
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .expect("code line")
            .to_owned();
        assert_eq!(code.len(), 64, "{}", out.stdout);

        let key = server.dir.join("new-device.key");
        let mut keygen = edgeward();
        keygen.args(["keygen", "--alg", "es256", "--out"]).arg(&key);
        run(keygen).ok();
        let enroll = |id: &str| {
            let mut cmd = edgeward();
            cmd.args(["enroll", "--backend", &server.url, "--ca"])
                .arg(server.data.join("ca.pem"))
                .args(["--code", &code, "--device", id, "--device-key"])
                .arg(&key);
            run(cmd)
        };
        let out = enroll("edge-7");
        out.ok();
        assert!(
            out.stdout.contains("device edge-7 enrolled"),
            "{}",
            out.stdout
        );
        let devices = server.admin(&["device", "list", "--json"]).ok().json();
        let text = devices.to_string();
        assert!(
            text.contains("edge-7") && text.contains("fleet-team"),
            "{text}"
        );
        // One time only.
        let out = enroll("edge-8");
        assert_eq!(out.code, Some(2), "{}", out.stdout);
        assert!(
            out.stderr.contains("enrolment code is not valid"),
            "{}",
            out.stderr
        );
        assert!(
            !server
                .admin(&["device", "list", "--json"])
                .ok()
                .stdout
                .contains("edge-8")
        );
    })
    .await
    .expect("join");
}

/// Policy and approvals as an operator runs them: `policy set/check`, a
/// guest refused with a ticket, `approvals list/show/approve/stats` by a
/// person with the approver role, and the same call going through once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_approvals_through_the_cli() {
    let upstream = Upstream::start(|r| {
        let ok = r.headers.get("x-api-key").map(|v| v.as_bytes()) == Some(UPSTREAM_KEY.as_bytes());
        respond(
            if ok { 200 } else { 401 },
            &[],
            if ok { "approved ok" } else { "no" },
        )
    })
    .await;
    let origin = upstream.origin();
    tokio::task::spawn_blocking(move || {
        let (text, key) = config("policy", &origin);
        let server = Server::start("policy", &text);
        let dir = server.dir.clone();
        let write = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, body).expect("write");
            p.display().to_string()
        };
        // A bad policy names the rule and the field, and changes nothing.
        let bad = write(
            "bad.toml",
            "agent = \"hello\"\n[[rule]]\nname = \"ask\"\ngrant = \"api\"\npath = \"v1/x\"\neffect = \"approve\"\n",
        );
        server
            .admin(&["policy", "set", &bad])
            .refused("policy \"hello\".rule \"ask\".path");
        let unknown = write(
            "unknown.toml",
            "agent = \"hello\"\n[[rule]]\nname = \"ask\"\ngrant = \"nope\"\neffect = \"approve\"\n",
        );
        server
            .admin(&["policy", "set", &unknown])
            .refused("policy \"hello\".rule \"ask\".grant");
        let good = write(
            "policy.toml",
            "agent = \"hello\"\n[[rule]]\nname = \"ask\"\ngrant = \"api\"\npath = \"/v1/ask/**\"\neffect = \"approve\"\n[[rule]]\nname = \"rest\"\ngrant = \"api\"\neffect = \"allow\"\n",
        );
        server.admin(&["policy", "set", &good]).ok();
        let url = format!("{origin}/v1/ask/now");
        let check = server
            .admin(&["policy", "check", "--agent", "hello", "--method", "GET", "--url", &url, "--json"])
            .ok()
            .json();
        assert_eq!(check["decision"], "approve");
        assert_eq!(check["rule"], "policy \"hello\".rule \"ask\"");
        let shown = server.admin(&["policy", "show", "--agent", "hello"]).ok().stdout.clone();
        assert!(shown.contains("name = \"ask\""), "{shown}");

        let run_agent = || {
            let mut cmd = edgeward();
            cmd.args(["run", "--backend", &server.url, "--ca"])
                .arg(server.data.join("ca.pem"))
                .args(["--device", "dev-1", "--device-key"])
                .arg(&key.key)
                .args(["--agent", "hello", "--task", &url, HELLO_WASM]);
            run(cmd)
        };
        let out = run_agent();
        assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("needs-approval") || out.stderr.contains("needs-approval"));
        let list = server.admin(&["approvals", "list", "--status", "pending", "--json"]).ok().json();
        let ticket = list["approvals"][0]["id"].as_str().expect("ticket").to_owned();
        assert!(format!("{}{}", out.stdout, out.stderr).contains(&ticket));
        let show = server.admin(&["approvals", "show", &ticket]).ok().stdout.clone();
        assert!(show.contains("GET") && show.contains("/v1/ask/now") && show.contains("rule \"ask\""), "{show}");

        // An approver of another agent sees nothing and decides nothing.
        let add = |name: &str, agent: &str| {
            let out = server
                .admin(&["admin", "add", "--name", name, "--role", "approver", "--agent", agent])
                .ok()
                .stdout
                .clone();
            out.lines().last().expect("credential").trim().to_owned()
        };
        let stranger = add("sam", "other-agent");
        server
            .as_principal(&stranger, &["approvals", "approve", &ticket])
            .refused("no approval ticket");
        let pat = add("pat", "hello");
        let out = server.as_principal(&pat, &["approvals", "approve", &ticket]);
        out.ok();
        assert!(out.stdout.contains("may go through once"), "{}", out.stdout);
        // A decided ticket cannot be decided again.
        server
            .as_principal(&pat, &["approvals", "deny", &ticket])
            .refused("not pending");

        let out = run_agent();
        out.ok();
        assert_eq!(out.stdout.trim(), "approved ok");
        let out = run_agent();
        assert_eq!(out.code, Some(1), "used once");
        let stats = server.as_principal(&pat, &["approvals", "stats", "--json"]).ok().json();
        let hello = &stats["agents"][0];
        assert_eq!(hello["agent"], "hello");
        assert_eq!(hello["sent_for_approval"], 2);
        assert_eq!(hello["approved"], 1);
        let page = server.admin(&["audit", "tail", "-n", "40", "--json"]).ok().json();
        let records = page["records"].as_array().expect("records");
        assert!(
            records.iter().any(|r| r["kind"] == "egress"
                && r["reason"].as_str().is_some_and(|x| x.contains("approved by pat"))),
            "{page}"
        );
        assert!(records.iter().any(|r| r["kind"] == "admin"
            && r["admin"] == "pat"
            && r["reason"].as_str().is_some_and(|x| x.starts_with(&format!("approvals approve {ticket}: approved")))));
        server.admin(&["audit", "verify"]).ok();
    })
    .await
    .expect("join");
    assert_eq!(upstream.received().len(), 1);
}
