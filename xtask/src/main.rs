//! Project tasks: `cargo xtask <task>`.
//!
//! - `test`: every test (installs what a fresh Debian machine lacks first).
//! - `demo`: build everything and run the demo.
//! - `bench`: native per-stage timings.
//! - `bench-server [N] [CONCURRENCY] [--templates T]`: load benchmark of the
//!   carrier server (SQLite and PostgreSQL, T stored templates pre-loaded):
//!   verifications per second, latency percentiles, server CPU time.
//! - `build-wasm [web|nodejs]`: the wasm package (wasm-bindgen, wasm-opt).
//! - `build-www`: the servable widget + demo page in target/www (wasm,
//!   models, brotli siblings) and its size report.
//! - `build-examples`: `npm pack` of target/www, installed into and built
//!   with each example of examples/ (in target/examples).
//! - `fetch-models`: download upstream model files missing from ../shared.
//! - `setup`: only the installation part of `test`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

mod eval;

/// Today's date (UTC) for reports, from `date`.
fn today() -> String {
    Command::new("date").args(["-u", "+%Y-%m-%d"]).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

/// The CPU model and core count, so figures say what they were taken on.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpu}, {cores} cores")
}

const WASM_BINDGEN_VERSION: &str = "0.2.130";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: {:?}", cmd);
    let status = cmd.status().map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed with {status}", cmd.get_program()))
    }
}

fn have(program: &str, arg: &str) -> Option<String> {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Everything a fresh Debian machine with rustup needs, installed only if missing.
fn setup() -> Result<(), String> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output().ok();
    let has_wasm = installed
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-unknown-unknown"))
        .unwrap_or(false);
    if !has_wasm {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    let wb = have("wasm-bindgen", "--version").unwrap_or_default();
    if !wb.contains(WASM_BINDGEN_VERSION) {
        run(cargo().args(["install", "wasm-bindgen-cli", "--version", WASM_BINDGEN_VERSION]))?;
    }
    // Debian packages the tests drive for real: node (wasm under Node),
    // ffmpeg (real footage into frames and fake-camera y4m).
    // chromium: the widget's end-to-end tests (driven by playwright-core,
    // which never downloads a browser of its own). sqlite3: bench-server
    // pre-loads stored templates with it.
    let missing: Vec<&str> = [("node", "nodejs"), ("npm", "npm"), ("ffmpeg", "ffmpeg"), ("chromium", "chromium"), ("chromedriver", "chromium-driver"), ("sqlite3", "sqlite3")]
        .into_iter()
        .filter(|(program, _)| have(program, "-version").is_none() && have(program, "--version").is_none())
        .map(|(_, package)| package)
        .collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    fetch_models()?;
    Ok(())
}

fn apt_install(pkgs: &[&str]) -> Result<(), String> {
    let sudo = have("id", "-u").map(|u| u.trim() != "0").unwrap_or(true);
    let mut update = Command::new(if sudo { "sudo" } else { "apt-get" });
    if sudo {
        update.arg("apt-get");
    }
    update.arg("update").arg("-qq");
    run(&mut update)?;
    let mut install = Command::new(if sudo { "sudo" } else { "apt-get" });
    if sudo {
        install.arg("apt-get");
    }
    install.env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y", "-qq"]).args(pkgs);
    run(&mut install)
}

/// Models that live upstream (recorded in the manifest with their URL): use
/// ../shared/models when it is there, otherwise download into models/cache and
/// verify the sha256.
fn fetch_models() -> Result<(), String> {
    for e in facegate::manifest::manifest().models {
        if facegate::manifest::locate(&e).is_some() {
            continue;
        }
        if e.location == "cache" {
            continue; // evaluation-only candidates, made by models/tools/build_models.py
        }
        let url = e.url.clone().ok_or_else(|| format!("model {} missing and has no download URL", e.file))?;
        let dest = root().join("models/cache").join(&e.file);
        std::fs::create_dir_all(dest.parent().unwrap()).map_err(|x| x.to_string())?;
        run(Command::new("curl").args(["-fsSL", "-o"]).arg(&dest).arg(&url))?;
        let bytes = std::fs::read(&dest).map_err(|x| x.to_string())?;
        facegate::manifest::verify(&e.name, &bytes).map_err(|x| x.to_string())?;
    }
    Ok(())
}

/// Build the wasm package into `out` for a wasm-bindgen target (web or nodejs).
/// The browser package (web) is shrunk with binaryen's wasm-opt -Oz, pinned
/// in xtask/npm (about 30 % smaller; it takes a few minutes, so the Node
/// test package skips it and results are cached by the input's sha256).
fn build_wasm(target: &str, out: &Path) -> Result<(), String> {
    bindgen(&cargo_build_wasm()?, target, out)
}

/// The wasm32 build of the core crate (cargo's part of every wasm package).
fn cargo_build_wasm() -> Result<PathBuf, String> {
    run(cargo().args(["build", "--lib", "--target", "wasm32-unknown-unknown", "--profile", "wasm"]))?;
    Ok(root().join("target/wasm32-unknown-unknown/wasm/facegate.wasm"))
}

/// wasm-bindgen's JS glue for `target` around a built wasm, shrunk with
/// wasm-opt for the browser.
fn bindgen(wasm: &Path, target: &str, out: &Path) -> Result<(), String> {
    run(Command::new("wasm-bindgen").arg(wasm).args(["--target", target, "--out-dir"]).arg(out))?;
    let bg = out.join("facegate_bg.wasm");
    if target == "web" {
        optimise_wasm(&bg)?;
    }
    let size = std::fs::metadata(&bg).map(|m| m.len()).unwrap_or(0);
    eprintln!("xtask: {} is {:.1} MB", bg.display(), size as f64 / 1e6);
    Ok(())
}

fn optimise_wasm(bg: &Path) -> Result<(), String> {
    let bytes = std::fs::read(bg).map_err(|e| e.to_string())?;
    let cache = root().join("target/wasm-opt-cache").join(format!("{}.wasm", facegate::manifest::sha256_hex(&bytes)));
    if !cache.exists() {
        let tools = root().join("xtask/npm");
        let wasm_opt = tools.join("node_modules/binaryen/bin/wasm-opt");
        if !wasm_opt.exists() {
            npm_ci(&tools)?;
        }
        std::fs::create_dir_all(cache.parent().unwrap()).map_err(|e| e.to_string())?;
        let tmp = cache.with_extension("tmp");
        // the features rustc enables for wasm32 + simd128
        let features = ["--enable-simd", "--enable-bulk-memory", "--enable-nontrapping-float-to-int", "--enable-sign-ext", "--enable-mutable-globals", "--enable-multivalue", "--enable-reference-types"];
        run(Command::new("node").arg(&wasm_opt).arg("-Oz").args(features).arg(bg).arg("-o").arg(&tmp))?;
        std::fs::rename(&tmp, &cache).map_err(|e| e.to_string())?;
    }
    std::fs::copy(&cache, bg).map(|_| ()).map_err(|e| e.to_string())
}

fn test() -> Result<(), String> {
    step("test", 1, 7, "install what is missing (wasm target, wasm-bindgen, apt packages, models)", setup)?;
    // Two cargo runs, so that each package gets the feature set it is
    // shipped with: the core crate with its models (the one native build of
    // tract), then the server and xtask on the protocol alone, which is the
    // very server binary the demo and the browser tests run.
    step("test", 2, 7, "core crate tests: the models natively, the CLI", || run(cargo().args(["test", "--release", "-p", "facegate"])))?;
    // the server's suites run against SQLite and a real PostgreSQL
    step("test", 3, 7, "carrier server and xtask tests (SQLite, PostgreSQL, PostgreSQL on shards)", server_tests)?;
    // the wasm32 build of the whole crate, then the real pipeline inside wasm
    // under Node. (Running wasm-opt on a thread beside the native build was
    // measured and is slower on 2 cores: 32 -> about 40 minutes cold.)
    let wasm = step("test", 4, 7, "wasm build and the pipeline in wasm under Node", || {
        let wasm = cargo_build_wasm()?;
        bindgen(&wasm, "nodejs", &root().join("target/wasm-node"))?;
        run(Command::new("node").current_dir(root()).args(["--test", "tests/wasm/"]))?;
        Ok(wasm)
    })?;
    step("test", 5, 7, "build the widget (wasm-opt, models, brotli)", || assemble_www(&wasm))?;
    step("test", 6, 7, "the npm package (npm pack) into the HTML, React and Vue examples, each built by its toolchain", build_examples)?;
    // the widget in headless Chromium, served by the real server binary
    step("test", 7, 7, "the widget, the examples and the demo command in headless Chromium", || {
        build_server()?; // already built by step 3: the demo test then only checks it
        let browser_tests = root().join("tests/browser");
        npm_ci(&browser_tests)?;
        run(Command::new("node").current_dir(&browser_tests).args(["--test", "--test-concurrency=1", "."]))
    })
}

/// The carrier server's and xtask's suites against SQLite, a real
/// PostgreSQL and PostgreSQL on shards (`cargo xtask test server` runs
/// these alone).
fn server_tests() -> Result<(), String> {
    let pg = Postgres::start()?;
    // the templates partitioned across two more servers: a second
    // database on the first is the coordinator
    let shards = [Postgres::start()?, Postgres::start()?];
    let tests = postgres_shards(&pg, &shards).and_then(|spec| {
        run(cargo().args(["test", "--release", "-p", "facegate-server", "-p", "xtask"]).env("FACEGATE_TEST_POSTGRES_URL", &pg.url).env("FACEGATE_TEST_SHARDS", spec))
    });
    for p in shards.iter().chain([&pg]) {
        p.stop();
    }
    tests
}

/// A throwaway PostgreSQL server from Debian's packages (installed when
/// missing) on a free loopback port, with an empty `facegate_test` database.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    user: Option<&'static str>,
    url: String,
    /// The server options it was started with (for a restart).
    options: String,
}

impl Postgres {
    fn bin_dir() -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path().join("bin")).filter(|b| b.join("postgres").exists()).collect();
        dirs.sort();
        dirs.pop()
    }

    /// A command run as the `postgres` user when we are root (initdb refuses
    /// to run as root), as ourselves otherwise.
    fn command(&self, program: &str) -> Command {
        match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(self.bin.join(program));
                c
            }
            None => Command::new(self.bin.join(program)),
        }
    }

    fn start() -> Result<Postgres, String> {
        if Self::bin_dir().is_none() {
            apt_install(&["postgresql"])?;
        }
        let bin = Self::bin_dir().ok_or("PostgreSQL binaries not found under /usr/lib/postgresql")?;
        let root_user = have("id", "-u").map(|u| u.trim() == "0").unwrap_or(false);
        // several at once (the shard test): one directory each
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data = std::env::temp_dir().join(format!("facegate-pg-{}-{nth}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let user = root_user.then_some("postgres");
        if root_user {
            run(Command::new("chown").arg("postgres:postgres").arg(&data))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let options = format!("-p {port} -c listen_addresses=127.0.0.1 -k {}", data.display());
        let pg = Postgres { bin, data: data.clone(), user, url: format!("postgres://facegate@127.0.0.1:{port}/facegate_test"), options };
        run(pg.command("initdb").args(["--no-sync", "-U", "facegate", "--auth=trust", "-D"]).arg(data.join("db")))?;
        run(&mut pg.pg_ctl("start"))?;
        run(pg.command("createdb").args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "facegate", "facegate_test"]))?;
        Ok(pg)
    }

    /// pg_ctl that starts (`start`, with its options and log) or stops
    /// (`stop`, fast) this server.
    fn pg_ctl(&self, action: &str) -> Command {
        let mut c = self.command("pg_ctl");
        c.args(["-w", "-s", "-D"]).arg(self.data.join("db"));
        match action {
            "start" => c.arg("-l").arg(self.data.join("log")).args(["-o", &self.options, "start"]),
            _ => c.args(["-m", "fast", "stop"]),
        };
        c
    }

    /// `pg_ctl(action)` as a shell command line, for a test that takes this
    /// server down and up again on purpose.
    fn control_shell(&self, action: &str) -> String {
        let c = self.pg_ctl(action);
        std::iter::once(c.get_program()).chain(c.get_args()).map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''"))).collect::<Vec<_>>().join(" ")
    }

    /// "host:port" of this server.
    fn address(&self) -> &str {
        self.url.trim_start_matches("postgres://facegate@").trim_end_matches("/facegate_test")
    }

    fn stop(&self) {
        let _ = run(&mut self.pg_ctl("stop"));
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A coordinator database on `pg` whose `face_templates` is partitioned
/// across `shards` with the README's script (server/sql/postgres-shards.sql);
/// its URL.
fn shard_coordinator(pg: &Postgres, shards: &[Postgres]) -> Result<String, String> {
    run(pg.command("createdb").args(["-h", "127.0.0.1", "-p", pg.address().rsplit(':').next().unwrap_or_default(), "-U", "facegate", "facegate_shards"]))?;
    let coordinator = pg.url.replace("/facegate_test", "/facegate_shards");
    let list: Vec<String> = shards.iter().map(|s| format!("{}/facegate_test", s.address())).collect();
    run(Command::new("psql")
        .args([coordinator.as_str(), "-q", "-v", "ON_ERROR_STOP=1", "-v"])
        .arg(format!("shards={}", list.join(",")))
        .args(["-v", "shard_user=facegate", "-f"])
        .arg(root().join("server/sql/postgres-shards.sql")))?;
    Ok(coordinator)
}

/// `shard_coordinator`, described for the server tests as JSON: the
/// coordinator URL, the shard URLs, and the shell commands that stop and
/// start the last shard.
fn postgres_shards(pg: &Postgres, shards: &[Postgres]) -> Result<String, String> {
    let coordinator = shard_coordinator(pg, shards)?;
    let last = shards.last().ok_or("no shards")?;
    Ok(serde_json::json!({
        "coordinator": coordinator,
        "shards": shards.iter().map(|s| s.url.clone()).collect::<Vec<_>>(),
        "stop_last": last.control_shell("stop"),
        "start_last": last.control_shell("start"),
    })
    .to_string())
}

/// Where `build-www` puts the servable site.
fn www_dist() -> PathBuf {
    root().join("target/www")
}

/// The widget and demo as the server serves them: www/ sources, the wasm
/// package (web target) and the model files the pipeline loads, each with a
/// brotli sibling (`.br`) the server sends to browsers that accept it.
/// Prints the first-visit size report and writes it to target/www/sizes.json.
fn build_www() -> Result<(), String> {
    assemble_www(&cargo_build_wasm()?)
}

/// Everything of `build_www` after cargo: the web package of a built wasm,
/// the widget's files, the models, the brotli siblings and the size report.
fn assemble_www(wasm: &Path) -> Result<(), String> {
    let dist = www_dist();
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::create_dir_all(dist.join("models")).map_err(|e| e.to_string())?;
    bindgen(wasm, "web", &dist.join("pkg"))?;
    let copy = |from: &Path, to: &Path| std::fs::copy(from, to).map(|_| ()).map_err(|e| format!("copy {}: {e}", from.display()));
    for entry in std::fs::read_dir(root().join("www")).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_file() {
            copy(&path, &dist.join(path.file_name().unwrap()))?;
        }
    }
    let manifest = facegate::manifest::manifest();
    for name in facegate::pipeline::PipelineOptions::default().model_names() {
        let entry = manifest.models.iter().find(|m| m.name == name).ok_or(format!("model {name} not in manifest"))?;
        let file = facegate::manifest::locate(entry).ok_or(format!("model file {} missing (run cargo xtask fetch-models)", entry.file))?;
        copy(&file, &dist.join("models").join(&entry.file))?;
    }
    // compress everything a first visit downloads, and report it
    let mut rows = Vec::new();
    let mut files = Vec::new();
    collect_files(&dist, &mut files);
    files.sort();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| e.to_string())?;
        let br = brotli_bytes(&bytes);
        std::fs::write(with_suffix(&f, ".br"), &br).map_err(|e| e.to_string())?;
        let gz = gzip_len(&bytes);
        let rel = f.strip_prefix(&dist).unwrap().to_string_lossy().to_string();
        rows.push((rel, bytes.len(), gz, br.len()));
    }
    let group = |pred: &dyn Fn(&str) -> bool| rows.iter().filter(|r| pred(&r.0)).fold((0, 0, 0), |a, r| (a.0 + r.1, a.1 + r.2, a.2 + r.3));
    // the deferred models (embedder, eye model) arrive in the background
    // while the user starts (see www/facegate-worker.js): counted apart from
    // what the first interaction waits for
    let deferred_files: Vec<String> = facegate::pipeline::PipelineOptions::default()
        .deferred_models()
        .iter()
        .filter_map(|name| manifest.models.iter().find(|m| &m.name == name))
        .map(|m| format!("models/{}", m.file))
        .collect();
    let is_deferred = |n: &str| deferred_files.iter().any(|f| f == n);
    let wasm = group(&|n| n.ends_with(".wasm"));
    let models = group(&|n| n.starts_with("models/") && !is_deferred(n));
    let deferred = group(&|n| is_deferred(n));
    let js = group(&|n| n.ends_with(".js"));
    let add = |a: (usize, usize, usize), b: (usize, usize, usize)| (a.0 + b.0, a.1 + b.1, a.2 + b.2);
    let first = add(add(wasm, models), js);
    let total = add(first, deferred);
    let mb = |n: usize| format!("{:.2}", n as f64 / 1e6);
    println!("{:<40}{:>10}{:>10}{:>10}", "first visit (MB)", "raw", "gzip", "brotli");
    for (name, g) in [("wasm", wasm), ("models before the deferred ones", models), ("javascript", js), ("before first interaction", first), ("embedder + eye model (in the background)", deferred), ("total", total)] {
        println!("{:<40}{:>10}{:>10}{:>10}", name, mb(g.0), mb(g.1), mb(g.2));
    }
    let as_json = |g: (usize, usize, usize)| serde_json::json!({"raw": g.0, "gzip": g.1, "brotli": g.2});
    let report = serde_json::json!({
        "wasm": as_json(wasm), "models": as_json(models), "deferred_background": as_json(deferred), "javascript": as_json(js),
        "before_first_interaction": as_json(first), "total": as_json(total),
        "files": rows.iter().map(|r| serde_json::json!({"file": r.0, "raw": r.1, "gzip": r.2, "brotli": r.3})).collect::<Vec<_>>(),
    });
    std::fs::write(dist.join("sizes.json"), serde_json::to_string_pretty(&report).unwrap()).map_err(|e| e.to_string())?;
    // the npm package ships the models: their sources and licences go with them
    std::fs::write(dist.join("models/NOTICE.md"), models_notice(&manifest)).map_err(|e| e.to_string())
}

/// Where each model file the widget ships comes from and under which
/// licence, from the manifest (models/README.md has the full texts' sources).
fn models_notice(manifest: &facegate::manifest::Manifest) -> String {
    let mut text = String::from("# Model files in this package\n\nEach file is checked against its sha256 by the widget before use. Sources and licences (from models/manifest.json of the facegate repository; models/README.md there has the details and the conversion scripts):\n");
    for name in facegate::pipeline::PipelineOptions::default().model_names() {
        if let Some(m) = manifest.models.iter().find(|m| m.name == name) {
            text.push_str(&format!("\n## {}\n\n- file: `{}`\n- sha256: `{}`\n- source: {}\n- licence: {}\n", m.file, m.file, m.sha256, m.url.as_deref().unwrap_or(&m.source), m.licence));
        }
    }
    text
}

/// The frameworks `examples/` shows the widget in (each a folder there).
const EXAMPLES: [&str; 3] = ["html", "react", "vue"];

/// The widget as its npm package (`npm pack` of target/www, whose
/// package.json lists what ships), installed from the tarball into a copy
/// of each example in target/examples/<name> and built there with the
/// example's own pinned toolchain (`npm ci`, `npm run build`), as a
/// carrier's web team would. tests/browser/examples.test.mjs loads the
/// built sites.
fn build_examples() -> Result<(), String> {
    let packed = root().join("target/npm");
    let _ = std::fs::remove_dir_all(&packed);
    std::fs::create_dir_all(&packed).map_err(|e| e.to_string())?;
    run(Command::new("npm").args(["pack", "--silent", "--pack-destination"]).arg(&packed).current_dir(www_dist()))?;
    let tarball = std::fs::read_dir(&packed).map_err(|e| e.to_string())?.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "tgz")).ok_or("npm pack made no tarball")?;
    for name in EXAMPLES {
        let dir = root().join("target/examples").join(name);
        // node_modules is kept between runs (npm_ci reinstalls when the lock file changed)
        copy_tree(&root().join("examples").join(name), &dir, &["node_modules", "dist"])?;
        npm_ci(&dir)?;
        run(Command::new("npm").args(["install", "--no-save", "--no-audit", "--no-fund"]).arg(&tarball).current_dir(&dir))?;
        let _ = std::fs::remove_dir_all(dir.join("dist"));
        run(Command::new("npm").args(["run", "build"]).current_dir(&dir))?;
    }
    Ok(())
}

/// Copies the files under `from` into `to`, leaving out top-level entries
/// named in `skip`.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?.flatten() {
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name), &[])?;
        } else {
            std::fs::copy(&path, to.join(&name)).map_err(|e| format!("copy {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else if !p.to_string_lossy().ends_with(".br") && p.file_name().is_some_and(|n| n != "sizes.json") {
            out.push(p);
        }
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn brotli_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams { quality: 11, lgwin: 22, ..Default::default() };
    brotli::BrotliCompress(&mut &bytes[..], &mut out, &params).expect("in-memory compression");
    out
}

fn gzip_len(bytes: &[u8]) -> usize {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).expect("in-memory compression");
    e.finish().expect("in-memory compression").len()
}

/// Runs one named step of a long task, telling the user which step it is,
/// how long it took the last time on this machine (kept in
/// target/xtask-steps.json) and how long it took now, so that a first cold
/// run visibly makes progress.
fn step<T>(task: &str, n: usize, of: usize, name: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let file = root().join("target/xtask-steps.json");
    let mut times: serde_json::Value = std::fs::read_to_string(&file).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_else(|| serde_json::json!({}));
    let key = format!("{task}: {name}");
    let last = times.get(&key).and_then(|v| v.as_f64()).map(|s| format!(" (last time {:.0} s)", s)).unwrap_or_else(|| " (first run on this machine: can take many minutes)".into());
    eprintln!("\n==> {task} {n}/{of}: {name}{last}");
    let started = Instant::now();
    let out = f()?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("==> {task} {n}/{of}: {name} done in {secs:.0} s");
    times[&key] = serde_json::json!(secs);
    let _ = std::fs::create_dir_all(root().join("target"));
    let _ = std::fs::write(&file, serde_json::to_string_pretty(&times).unwrap_or_default());
    Ok(out)
}

/// The release carrier server, exactly as the demo and the browser tests run
/// it: its package alone, so the core crate comes without model inference
/// and no tract is compiled for it.
fn build_server() -> Result<(), String> {
    run(cargo().args(["build", "--release", "-p", "facegate-server"]))
}

/// The release `facegate` CLI (the models natively), which eval and bench drive.
fn build_cli() -> Result<(), String> {
    run(cargo().args(["build", "--release", "-p", "facegate", "--bin", "facegate"]))
}

/// Builds everything and serves the demo SIM-order page with the widget and
/// the carrier server on FACEGATE_ADDR (default 127.0.0.1:8080), until
/// interrupted.
fn demo() -> Result<(), String> {
    step("demo", 1, 4, "install what is missing (wasm target, wasm-bindgen, apt packages, models)", setup)?;
    step("demo", 2, 4, "build the carrier server (release)", build_server)?;
    step("demo", 3, 4, "build the widget: wasm, wasm-opt, models, brotli", build_www)?;
    eprintln!("\n==> demo 4/4: start the server");
    let addr = std::env::var("FACEGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let data = root().join("target/demo");
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let mut server = Command::new(root().join("target/release/facegate-server"));
    server.args(["--addr", &addr, "--demo", "--www"]).arg(www_dist()).arg("--db").arg(data.join("facegate.db"));
    if std::env::var("FACEGATE_API_KEY").is_err() {
        // the demo's order page never uses the API key; a carrier back end would
        server.env("FACEGATE_API_KEY", "demo-api-key-not-for-production");
    }
    println!("facegate demo: open http://{addr}/ (Ctrl-C stops it)");
    run(&mut server)
}

/// The frames every benchmark runs on, natively and in the browser (made
/// once here; bench/web/run.mjs serves this same folder to the page): 2 s of
/// the footage at 10 fps scaled to 640 wide, four stills, and the ID photo
/// the browser side matches against.
const BENCH_STILLS: [&str; 4] = ["obama-480p.jpg", "biden.jpg", "alex-lacamoire.png", "kit_harington_john1.jpeg"];

fn bench_frames(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let faces = root().join("../shared/data/faces");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    run(Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-ss", "4.0", "-t", "2.0", "-i"])
        .arg(faces.join("short_hamilton_clip.mp4"))
        .args(["-vf", "fps=10,scale=640:-2"])
        .arg(dir.join("clip_%03d.png")))?;
    for (i, still) in BENCH_STILLS.iter().enumerate() {
        run(Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-i"])
            .arg(faces.join(still))
            .args(["-vf", "scale=640:480:force_original_aspect_ratio=decrease"])
            .arg(dir.join(format!("still_{i}.png"))))?;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten().map(|e| e.path()).collect();
    files.sort();
    let names: Vec<String> = files.iter().filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
    // the same performer's portrait, as the browser side's ID photo
    std::fs::copy(faces.join("lin-manuel-miranda.png"), dir.join("reference.png")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("list.json"), serde_json::json!({"reference": "reference.png", "frames": names}).to_string()).map_err(|e| e.to_string())?;
    Ok(files)
}

/// `cargo xtask bench`: the pipeline natively (tract on this CPU), stage by
/// stage and per model, then the same frames in headless Chromium through
/// facegate's wasm and through onnxruntime-web (bench/web/run.mjs). Writes
/// target/bench/native.json and web.json; the last line printed is
/// `ratio_end_to_end=<facegate / onnxruntime-web>` (wasm, one thread each).
fn bench(reps: usize) -> Result<(), String> {
    build_cli()?;
    let out = root().join("target/bench");
    let frame_dir = out.join("frames");
    let frames = bench_frames(&frame_dir)?;
    // the CLI times the stages (xtask itself does not link the models)
    let mut args = vec!["bench".to_string(), "--reps".into(), reps.to_string()];
    args.extend(frames.iter().map(|f| f.display().to_string()));
    let mut native = eval::facegate(&root(), &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    native["date"] = serde_json::json!(today());
    native["machine"] = serde_json::json!(machine());
    println!("native (tract-onnx on {}), {} frames x {reps}, median ms", machine(), frames.len());
    for group in ["stages", "models"] {
        for (k, v) in native[group].as_object().cloned().unwrap_or_default() {
            let label = if group == "models" { format!("model {k}") } else { k };
            println!("  {label:<30}{:>9.2}", v.as_f64().unwrap_or(f64::NAN));
        }
    }
    std::fs::write(out.join("native.json"), serde_json::to_string_pretty(&native).unwrap()).map_err(|e| e.to_string())?;

    build_www()?;
    npm_ci(&root().join("tests/browser"))?;
    npm_ci(&root().join("bench/web"))?;
    run(Command::new("node").arg(root().join("bench/web/run.mjs")).arg("--reps").arg(reps.to_string()).arg("--frames").arg(&frame_dir))
}

/// `npm ci` (the exact versions of the committed lock file) unless
/// node_modules was installed from this very lock file already (a copy of
/// it is kept in node_modules after each install).
fn npm_ci(dir: &Path) -> Result<(), String> {
    let lock = std::fs::read(dir.join("package-lock.json")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let installed_from = dir.join("node_modules/.facegate-installed-lock.json");
    if std::fs::read(&installed_from).is_ok_and(|l| l == lock) {
        return Ok(());
    }
    run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(dir))?;
    std::fs::write(&installed_from, &lock).map_err(|e| e.to_string())
}

/// A loopback load generator for the carrier server: `concurrency` clients
/// run `n` verifications end to end (create session with the API key →
/// register a device key → signed result → read the decision record), on
/// SQLite and on PostgreSQL. The results are real Ed25519-signed results
/// with synthetic tracks and templates: the server's work is the real one.
fn bench_server(n: usize, concurrency: usize, templates: usize) -> Result<(), String> {
    build_server()?;
    let real: Vec<facegate::template::ProtectedTemplate> = if templates > 0 {
        setup()?; // sqlite3 among the rest
        face_templates()?.into_iter().map(|(_, t)| t).collect()
    } else {
        Vec::new()
    };
    let model = if templates > 0 { Some(FaceModel::fit(&real)?) } else { None };
    let faces = model.as_ref().map(|m| (real.as_slice(), m));
    let pg = Postgres::start()?;
    // the same on a coordinator whose templates live on two more servers
    let shards = [Postgres::start()?, Postgres::start()?];
    let coordinator = shard_coordinator(&pg, &shards)?;
    let dir = std::env::temp_dir().join(format!("facegate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let sqlite = dir.join("bench.db").display().to_string();
    // a database whose run fails (it can, with many stored templates) is
    // reported in its row; the others still run
    let rows: Vec<(&str, Result<LoadRow, String>)> = [("sqlite", sqlite.as_str()), ("postgresql", pg.url.as_str()), ("pg-2-shards", coordinator.as_str())]
        .into_iter()
        .map(|(label, db)| (label, load_run(label, db, n, concurrency, templates, faces, &dir)))
        .collect();
    for p in shards.iter().chain([&pg]) {
        p.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{:<12}{:>10}{:>8}{:>8}{:>14}{:>10}{:>10}{:>10}{:>14}{:>16}{:>14}{:>14}",
        "database", "templates", "n", "clients", "verif/s", "p50 ms", "p95 ms", "p99 ms", "submit p50", "server CPU ms", "server MB", "stored MB"
    );
    for (label, row) in &rows {
        match row {
            Ok(r) => println!(
                "{:<12}{:>10}{:>8}{:>8}{:>14.1}{:>10.1}{:>10.1}{:>10.1}{:>14.1}{:>16.2}{:>14.0}{:>14.0}",
                label, templates, n, concurrency, r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7
            ),
            Err(e) => println!("{:<12}{:>10}{:>8}{:>8}  failed: {e}", label, templates, n, concurrency),
        }
    }
    match rows.iter().find(|r| r.1.is_err()) {
        Some((label, _)) => Err(format!("the {label} run failed (see its row)")),
        None => Ok(()),
    }
}

/// verifications/s, p50/p95/p99 ms per verification, p50 ms of the result
/// submission, the server's CPU ms per verification, the server's resident
/// memory (MB) and the stored templates' size on disk (MB) after the run
type LoadRow = (f64, f64, f64, f64, f64, f64, f64, f64);

/// Resident memory of a process in MB, from /proc (Linux).
fn process_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The stored templates' table with its indexes on disk, in MB.
fn templates_disk_mb(db: &str) -> Option<f64> {
    let (program, args): (&str, Vec<&str>) = if db.starts_with("postgres") {
        // a partitioned table (shards) has no size of its own: not measured
        ("psql", vec![db, "-Atc", "SELECT pg_total_relation_size(oid) FROM pg_class WHERE relname = 'face_templates' AND relkind = 'r'"])
    } else {
        ("sqlite3", vec![db, "SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'face_templates%' OR name LIKE 'sqlite_autoindex_face_templates%'"])
    };
    let out = Command::new(program).args(args).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().ok().map(|b| b / 1e6)
}

/// The bench server's template keys, fixed so that pre-loaded templates are
/// sealed the way the server seals its own.
const BENCH_TRANSFORM_KEY: &str = "62656e6368207472616e73666f726d206b6579206f66207468652062656e6368";
const BENCH_STORAGE_KEY: &str = "62656e63682073746f72616765206b6579206f66207468652062656e63682021";

/// The protected templates of every lfw-dev image under the bench transform
/// key (the release CLI, once; cached in target/bench), each with its
/// person (the file name up to its last `_`).
fn face_templates() -> Result<Vec<(String, facegate::template::ProtectedTemplate)>, String> {
    let cache = root().join("target/bench/lfw-dev-templates.json");
    let text = match std::fs::read_to_string(&cache) {
        Ok(t) => t,
        Err(_) => {
            build_cli()?;
            let mut images: Vec<PathBuf> = Vec::new();
            collect_files(&root().join("../shared/data/lfw-dev/images"), &mut images);
            images.sort();
            eprintln!("xtask: protected templates of {} lfw-dev images", images.len());
            let out = Command::new(root().join("target/release/facegate")).arg("protect").args(&images).args(["--key", BENCH_TRANSFORM_KEY, "--json"]).output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("facegate protect: {}", String::from_utf8_lossy(&out.stderr)));
            }
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            std::fs::create_dir_all(cache.parent().unwrap()).map_err(|e| e.to_string())?;
            std::fs::write(&cache, &text).map_err(|e| e.to_string())?;
            text
        }
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let person = |image: &str| facegate::metrics::lfw_identity(Path::new(image).file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default().as_str());
    let templates: Vec<(String, facegate::template::ProtectedTemplate)> = v["templates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| Some((person(row["image"].as_str()?), serde_json::from_value(row["template"].clone()).ok()?)))
        .collect();
    if templates.is_empty() {
        return Err("no lfw-dev image gave a template".into());
    }
    Ok(templates)
}

/// The default embedder's (mobilefacenet) embedding size.
const FACE_DIM: usize = 192;

/// splitmix64 as a stream of uniform numbers in [0, 1): fast and repeatable,
/// good enough to draw synthetic data, not for keys.
fn uniform_stream(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
    }
}

/// Synthetic faces: embeddings drawn from a Gaussian with the mean and
/// covariance of real faces' embeddings as their templates reveal them
/// (back-projected with the bench transform key), normalised and protected
/// as a device does. Unlike independent bits, this keeps what decides how
/// much a duplicate search must read: the correlations of 2,048 bits taken
/// from one 192-d embedding and the spread of distances between different
/// people. Identity clusters (several photos of one person) are not drawn.
struct FaceModel {
    transform: facegate::template::TransformKey,
    mean: Vec<f64>,
    /// Lower-triangular Cholesky factor of the covariance, row-major.
    chol: Vec<f64>,
}

impl FaceModel {
    fn fit(real: &[facegate::template::ProtectedTemplate]) -> Result<FaceModel, String> {
        let transform = facegate::template::TransformKey::from_hex(BENCH_TRANSFORM_KEY, FACE_DIM).map_err(|e| e.to_string())?;
        let xs: Vec<Vec<f64>> = real.iter().map(|t| transform.back_project(t).map(|e| e.0.iter().map(|&v| v as f64).collect())).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        let n = xs.len() as f64;
        let mean: Vec<f64> = (0..FACE_DIM).map(|j| xs.iter().map(|x| x[j]).sum::<f64>() / n).collect();
        let mut cov = vec![0.0; FACE_DIM * FACE_DIM];
        for x in &xs {
            for i in 0..FACE_DIM {
                for j in 0..=i {
                    cov[i * FACE_DIM + j] += (x[i] - mean[i]) * (x[j] - mean[j]) / (n - 1.0);
                }
            }
        }
        // Cholesky–Banachiewicz; a tiny ridge keeps it positive definite
        let mut chol = vec![0.0; FACE_DIM * FACE_DIM];
        for i in 0..FACE_DIM {
            for j in 0..=i {
                let sum: f64 = (0..j).map(|k| chol[i * FACE_DIM + k] * chol[j * FACE_DIM + k]).sum();
                chol[i * FACE_DIM + j] = if i == j {
                    (cov[i * FACE_DIM + i] + 1e-9 - sum).max(1e-12).sqrt()
                } else {
                    (cov[i * FACE_DIM + j] - sum) / chol[j * FACE_DIM + j]
                };
            }
        }
        Ok(FaceModel { transform, mean, chol })
    }

    /// `count` synthetic faces' device templates, on every core, each chunk
    /// from its own fixed seed so that runs repeat.
    fn draw_many(&self, count: usize) -> Vec<facegate::template::ProtectedTemplate> {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let chunk = count.div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..count)
                .step_by(chunk)
                .map(|start| {
                    scope.spawn(move || {
                        let mut uniform = uniform_stream(0x5eed_0000 + start as u64);
                        (start..(start + chunk).min(count)).map(|_| self.draw(&mut uniform)).collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("draw")).collect()
        })
    }

    /// One synthetic face's device template.
    fn draw(&self, uniform: &mut impl FnMut() -> f64) -> facegate::template::ProtectedTemplate {
        let z: Vec<f64> = (0..FACE_DIM).map(|_| (-2.0 * (1.0 - uniform()).ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos()).collect();
        let x: Vec<f64> = (0..FACE_DIM).map(|i| self.mean[i] + (0..=i).map(|k| self.chol[i * FACE_DIM + k] * z[k]).sum::<f64>()).collect();
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        let e = facegate::embed::Embedding(x.iter().map(|v| (v / norm) as f32).collect());
        self.transform.protect(&e).expect("the model's dimension is the key's")
    }
}

/// `count` stored templates written straight into the server's
/// `face_templates` table (after its migrations ran), as the server would
/// have stored them: sealed with its storage key, numbered in its change
/// sequence. The first are the `real` faces' templates; the rest are drawn
/// from `model`.
fn preload_templates(db: &str, count: usize, dir: &Path, real: &[facegate::template::ProtectedTemplate], model: &FaceModel) -> Result<(), String> {
    use std::io::Write;
    let storage = facegate::template::StorageKey::from_hex(BENCH_STORAGE_KEY).map_err(|e| e.to_string())?;
    let drawn = model.draw_many(count.saturating_sub(real.len()));
    let postgres = db.starts_with("postgres");
    let file = dir.join(if postgres { "templates.csv" } else { "templates.sql" });
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).map_err(|e| e.to_string())?);
    if !postgres {
        writeln!(out, "BEGIN;").map_err(|e| e.to_string())?;
    }
    for (i, device) in real.iter().take(count).chain(&drawn).enumerate() {
        let device = facegate::template::ProtectedTemplate { storage_key_id: None, ..device.clone() };
        let sealed = storage.seal(&device).map_err(|e| e.to_string())?;
        let (seq, key) = (i + 1, sealed.storage_key_id.as_deref().unwrap_or_default());
        let (scheme, transform) = (&sealed.scheme, &sealed.transform_key_id);
        if postgres {
            writeln!(out, "{seq},preload-{i},preload-subscriber-{i},{scheme},{transform},{key},\\x{},0", sealed.bits)
        } else {
            writeln!(out, "INSERT INTO face_templates VALUES ({seq},'preload-{i}','preload-subscriber-{i}','{scheme}','{transform}','{key}',X'{}',0);", sealed.bits)
        }
        .map_err(|e| e.to_string())?;
    }
    let advance = "UPDATE template_seq SET last = (SELECT MAX(seq) FROM face_templates) WHERE id = 1";
    if !postgres {
        writeln!(out, "{advance};\nCOMMIT;").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    drop(out);
    if postgres {
        run(Command::new("psql").args(["-q", db, "-c"]).arg(format!(
            "\\copy face_templates (seq, session_id, subscriber_id, scheme, transform_key_id, storage_key_id, bits, created_ms) FROM '{}' WITH (FORMAT csv)",
            file.display()
        )))?;
        run(Command::new("psql").args(["-q", db, "-c", advance]))?;
    } else {
        run(Command::new("sqlite3").arg(db).arg(format!(".read {}", file.display())))?;
    }
    std::fs::remove_file(&file).map_err(|e| e.to_string())
}

/// The duplicate search measured in this process on `stored` templates (the
/// protected templates of every lfw-dev image, the rest synthetic faces
/// drawn like them, all sealed with the bench storage key), at each of the
/// embedder's protected-domain operating points from FAR 1e-5 down: every
/// lfw-dev template is a probe against all the others. Reports the
/// cascade's recall against the exhaustive scan beside it (what `search`
/// finds of what a full comparison finds), the time per search of both
/// (their ratio is the figure; seconds depend on the machine), templates
/// read whole, the false duplicates per verification on lfw-dev's real
/// impostor pairs scaled to `stored` (FAR × N) and as seen on the
/// synthetic background, the genuine pairs found (TAR), and the memory.
fn bench_search(stored: usize) -> Result<(), String> {
    use facegate::search::{pack, Change, TemplateIndex, Thresholds};
    let faces = face_templates()?;
    let real: Vec<facegate::template::ProtectedTemplate> = faces.iter().map(|(_, t)| t.clone()).collect();
    let model = FaceModel::fit(&real)?;
    let storage = facegate::template::StorageKey::from_hex(BENCH_STORAGE_KEY).map_err(|e| e.to_string())?;
    let sealed_bits = |t: &facegate::template::ProtectedTemplate| -> Result<facegate::search::Bits, String> {
        let sealed = storage.seal(&facegate::template::ProtectedTemplate { storage_key_id: None, ..t.clone() }).map_err(|e| e.to_string())?;
        pack(&sealed.bit_bytes().map_err(|e| e.to_string())?).ok_or_else(|| "template length".to_string())
    };
    eprintln!("xtask: drawing {} synthetic templates", stored.saturating_sub(real.len()));
    let probes: Vec<facegate::search::Bits> = real.iter().map(sealed_bits).collect::<Result<_, _>>()?;
    let mut index = TemplateIndex::default();
    let mut changes: Vec<Change> = probes.iter().enumerate().map(|(i, b)| Change::Stored { seq: i as i64 + 1, subscriber_id: format!("real-{i}"), bits: Box::new(*b) }).collect();
    for (i, t) in model.draw_many(stored.saturating_sub(real.len())).iter().enumerate() {
        changes.push(Change::Stored { seq: (real.len() + i) as i64 + 1, subscriber_id: format!("synthetic-{i}"), bits: Box::new(sealed_bits(t)?) });
    }
    index.apply(changes, 0);
    let points: Vec<&facegate::matching::OperatingPoint> = facegate::embed::config(facegate::embed::DEFAULT_EMBEDDER)
        .map_err(|e| e.to_string())?
        .duplicate_points
        .iter()
        .filter(|p| p.far <= 1e-5)
        .collect();
    let thresholds = |p: &facegate::matching::OperatingPoint| Thresholds::for_calibration(&facegate::matching::Calibration { threshold: p.score, ..facegate::matching::DEFAULT_CALIBRATION });
    let loosest = points.iter().filter_map(|p| thresholds(p)).map(|t| t.full).max().ok_or("no operating point")?;
    // the exhaustive scan once per probe at the loosest point, timed
    eprintln!("xtask: exhaustive scans of {} templates for {} probes", index.len(), probes.len());
    let mut exhaustive_ms = Vec::new();
    let mut exhaustive = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        let started = Instant::now();
        let hits = index.exhaustive_search(p, Thresholds { full: loosest, prefix: facegate::search::PREFIX_BITS as u32 }, &format!("real-{i}"));
        exhaustive_ms.push(started.elapsed().as_secs_f64() * 1e3);
        exhaustive.push(hits);
    }
    let exhaustive_p50 = percentile(&exhaustive_ms, 0.5);
    let real_index = |sub: &str| sub.strip_prefix("real-").and_then(|i| i.parse::<usize>().ok());
    let n_real = real.len();
    let mut impostor_pairs = 0u64;
    let mut genuine_pairs = 0u64;
    for i in 0..n_real {
        for j in 0..n_real {
            if i != j {
                if faces[i].0 == faces[j].0 {
                    genuine_pairs += 1;
                } else {
                    impostor_pairs += 1;
                }
            }
        }
    }
    println!("{} stored templates ({} lfw-dev, the rest synthetic), {} probes; exhaustive scan p50 {:.2} ms", index.len(), n_real, probes.len(), exhaustive_p50);
    println!(
        "{:<10}{:>7}{:>8}{:>14}{:>12}{:>10}{:>10}{:>10}{:>10}{:>16}{:>16}{:>10}",
        "point", "bits", "prefix", "recall", "read whole", "p50 ms", "p95 ms", "p99 ms", "x faster", "false dup/verif", "synthetic hits", "TAR"
    );
    let mut rows = Vec::new();
    for p in &points {
        let Some(t) = thresholds(p) else { continue };
        let (mut found, mut expected, mut read_whole, mut ms) = (0usize, 0usize, 0usize, Vec::new());
        let (mut impostors, mut genuine, mut synthetic_hits) = (0u64, 0u64, 0u64);
        for (i, probe) in probes.iter().enumerate() {
            let started = Instant::now();
            let (hits, whole) = index.search_counting(probe, t, &format!("real-{i}"));
            ms.push(started.elapsed().as_secs_f64() * 1e3);
            read_whole += whole;
            let truth: Vec<&facegate::search::Hit> = exhaustive[i].iter().filter(|h| h.distance <= t.full).collect();
            expected += truth.len();
            found += hits.iter().filter(|h| truth.contains(h)).count();
            for h in &truth {
                match real_index(&h.subscriber_id) {
                    Some(j) if faces[j].0 == faces[i].0 => genuine += 1,
                    Some(_) => impostors += 1,
                    None => synthetic_hits += 1,
                }
            }
        }
        let recall = found as f64 / expected.max(1) as f64;
        let false_per_verification = impostors as f64 / impostor_pairs.max(1) as f64 * index.len() as f64;
        let synthetic_per_probe = synthetic_hits as f64 / probes.len() as f64;
        let tar = genuine as f64 / genuine_pairs.max(1) as f64;
        println!(
            "{:<10}{:>7}{:>8}{:>14}{:>12.0}{:>10.3}{:>10.3}{:>10.3}{:>10.1}{:>16.3}{:>16.3}{:>9.1}%",
            p.name,
            t.full,
            t.prefix,
            format!("{found}/{expected}"),
            read_whole as f64 / probes.len() as f64,
            percentile(&ms, 0.5),
            percentile(&ms, 0.95),
            percentile(&ms, 0.99),
            exhaustive_p50 / percentile(&ms, 0.5),
            false_per_verification,
            synthetic_per_probe,
            tar * 100.0
        );
        rows.push(serde_json::json!({
            "point": p.name, "far": p.far, "max_bits": t.full, "prefix_bits": t.prefix, "found": found, "exhaustive_found": expected, "recall": recall,
            "read_whole_per_search": read_whole as f64 / probes.len() as f64, "ms": {"p50": percentile(&ms, 0.5), "p95": percentile(&ms, 0.95), "p99": percentile(&ms, 0.99)},
            "exhaustive_ms_p50": exhaustive_p50, "real_impostor_hits": impostors, "real_impostor_pairs": impostor_pairs,
            "false_duplicates_per_verification": false_per_verification, "synthetic_hits_per_probe": synthetic_per_probe, "genuine_found": genuine, "genuine_pairs": genuine_pairs, "tar": tar,
        }));
    }
    // concurrent searches batched into one pass (what the server does under
    // load): time per probe at the strictest point, against one at a time
    if let Some(t) = points.last().and_then(|p| thresholds(p)) {
        let excepts: Vec<String> = (0..probes.len()).map(|i| format!("real-{i}")).collect();
        // the build this CPU runs (AVX-512's vector bit count where it has
        // one), then the one-popcnt-per-word build, over the same batches
        let per_search = |size: usize, search: &dyn Fn(&[facegate::search::Probe]) -> Vec<(Vec<facegate::search::Hit>, usize)>| {
            let started = Instant::now();
            let mut searched = 0;
            for (chunk, names) in probes.chunks(size).zip(excepts.chunks(size)).take(800 / size) {
                let batch: Vec<facegate::search::Probe> = chunk.iter().zip(names).map(|(bits, name)| facegate::search::Probe { bits, thresholds: t, except_subscriber: name }).collect();
                std::hint::black_box(search(&batch));
                searched += batch.len();
            }
            started.elapsed().as_secs_f64() * 1e3 / searched as f64
        };
        for size in [1usize, 4, 8, 16] {
            let best = per_search(size, &|b| index.search_batch(b));
            let popcnt = per_search(size, &|b| index.search_batch_without_vector_count(b));
            println!("batches of {size:>2}: {best:.3} ms per search ({popcnt:.3} ms with one popcnt per word: {:.1}x)", popcnt / best);
        }
    }
    let bytes = index.bytes_per_template();
    println!("memory: {bytes} bytes per template, {:.0} MB per million", bytes as f64);
    let report = serde_json::json!({"stored": index.len(), "real": n_real, "bytes_per_template": bytes, "points": rows});
    std::fs::create_dir_all(root().join("target/bench")).map_err(|e| e.to_string())?;
    std::fs::write(root().join("target/bench/search.json"), serde_json::to_string_pretty(&report).unwrap()).map_err(|e| e.to_string())
}

/// The bench's server on `db`, listening; its start-up time (which loads the
/// duplicate search index) in ms.
fn start_bench_server(db: &str, key: &str, templates: usize) -> Result<(std::process::Child, u16, f64), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let started = Instant::now();
    // the 1:N point a carrier with this many templates configures (the
    // default far1e-5 is for up to 10,000)
    let population = (templates > 10_000).then(|| templates.min(1_000_000).to_string());
    let mut server = Command::new(root().join("target/release/facegate-server"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--db", db, "--rate-limit-per-minute", "100000000"])
        .args(population.iter().flat_map(|n| ["--duplicate-population", n.as_str()]))
        .env("FACEGATE_API_KEY", key)
        .env("FACEGATE_TRANSFORM_KEY", BENCH_TRANSFORM_KEY)
        .env("FACEGATE_STORAGE_KEY", BENCH_STORAGE_KEY)
        .env("RUST_LOG", "warn")
        .spawn()
        .map_err(|e| e.to_string())?;
    // a million stored templates take seconds to load
    while started.elapsed().as_secs() < 600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((server, port, started.elapsed().as_secs_f64() * 1e3));
        }
        if let Ok(Some(status)) = server.try_wait() {
            return Err(format!("server exited: {status}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = server.kill();
    Err("server did not start".into())
}

fn load_run(label: &'static str, db: &str, n: usize, concurrency: usize, templates: usize, faces: Option<(&[facegate::template::ProtectedTemplate], &FaceModel)>, dir: &Path) -> Result<LoadRow, String> {
    use serde_json::{json, Value};
    const KEY: &str = "bench-api-key-0123456789";
    if let (true, Some((real, model))) = (templates > 0, faces) {
        // the server makes its tables; the templates go in while it is down
        let (mut server, _, _) = start_bench_server(db, KEY, 0)?;
        let _ = server.kill();
        let _ = server.wait();
        eprintln!("xtask: pre-loading {templates} templates into {label}");
        preload_templates(db, templates, dir, real, model)?;
    }
    let (mut server, port, startup_ms) = start_bench_server(db, KEY, templates)?;
    eprintln!("xtask: {label} server up in {startup_ms:.0} ms (loads {templates} stored templates)");
    let base = format!("http://127.0.0.1:{port}");
    let post = |url: &str, key: Option<&str>, body: &str| -> Result<Value, String> {
        let mut r = ureq::post(url).set("content-type", "application/json");
        if let Some(k) = key {
            r = r.set("x-api-key", k);
        }
        r.send_string(body).map_err(|e| e.to_string())?.into_json().map_err(|e| e.to_string())
    };
    // The device side of every verification (its key, its protected
    // template, the track and transcript of each possible challenge) is made
    // before the clock starts, so that the figures are the server's. The
    // carrier's transform key and accepted models come from one untimed
    // session first.
    let probe = post(&format!("{base}/v1/sessions"), Some(KEY), &json!({"order_id": format!("{label}-probe"), "subscriber_id": format!("{label}-probe")}).to_string())?;
    let probe_id = probe["session_id"].as_str().ok_or("no session id")?;
    let probe_key = facegate::signed::DeviceKey::from_seed([0xff; 32]);
    let probe_config = post(&format!("{base}/v1/sessions/{probe_id}/device-key"), None, &json!({"public_key": probe_key.public_key_hex()}).to_string())?["session_config"].clone();
    let transform = facegate::template::TransformKey::from_hex(probe_config["transform_key"].as_str().unwrap_or_default(), 256).map_err(|e| e.to_string())?;
    let accepted = probe["accepted_models"].as_object().ok_or("no models")?;
    let models: std::collections::BTreeMap<String, String> = facegate::pipeline::PipelineOptions::default()
        .model_names()
        .into_iter()
        .map(|m| {
            let sha = accepted[&m].as_str().unwrap_or_default().to_string();
            (m, sha)
        })
        .collect();
    let mut uniform = uniform_stream(0xfeed);
    let devices: Vec<(facegate::signed::DeviceKey, facegate::template::ProtectedTemplate)> = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            // a new face per verification, so the duplicate check (1:N over
            // the stored templates) does a real search: drawn like the
            // stored faces when there are some, else any distinct vector
            let template = match faces {
                Some((_, model)) => model.draw(&mut uniform),
                None => {
                    let v: Vec<f32> = (0..256).map(|k| ((k as f32 + 1.0) * (i as f32 * 0.37 + 1.3)).sin()).collect();
                    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
                    transform.protect(&facegate::embed::Embedding(v.into_iter().map(|a| a / norm).collect())).map_err(|e| e.to_string())?
                }
            };
            Ok((facegate::signed::DeviceKey::from_seed(seed), template))
        })
        .collect::<Result<_, String>>()?;
    let mut performances = std::collections::HashMap::new();
    for i in 0u32..4096 {
        if let std::collections::hash_map::Entry::Vacant(slot) = performances.entry(facegate::challenge::steps_for_seed(&i.to_le_bytes())) {
            let track = facegate::challenge::synthetic_track(slot.key());
            let transcript = facegate::challenge::verify_track(&i.to_le_bytes(), &track).map_err(|e| format!("{e:?}"))?;
            slot.insert((track, transcript));
        }
    }
    let verify_one = |i: usize| -> Result<(f64, f64), String> {
        let started = Instant::now();
        let (key, template) = &devices[i];
        let session = post(&format!("{base}/v1/sessions"), Some(KEY), &json!({"order_id": format!("{label}-order-{i}"), "subscriber_id": format!("{label}-sub-{i}")}).to_string())?;
        let id = session["session_id"].as_str().ok_or("no session id")?.to_string();
        let config = post(&format!("{base}/v1/sessions/{id}/device-key"), None, &json!({"public_key": key.public_key_hex()}).to_string())?["session_config"].clone();
        let challenge_seed = hex::decode(config["challenge_seed"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
        let steps = facegate::challenge::steps_for_seed(&challenge_seed);
        let (track, transcript) = performances.get(&steps).cloned().ok_or("a challenge outside the prepared ones")?;
        let result = facegate::signed::VerificationResult {
            version: facegate::signed::PROTOCOL_VERSION,
            session_id: id.clone(),
            nonce: config["nonce"].as_str().unwrap_or_default().into(),
            issued_at_ms: 1,
            match_score: 0.93,
            passive_liveness: 0.9,
            screen_grid: Some(1.3),
            active_liveness: facegate::signed::ActiveLiveness { steps, transcript, track },
            models: models.clone(),
            widget_version: "bench".into(),
            template: template.clone(),
            decision: facegate::signed::ClientDecision { pass: true, reason: "ok".into() },
            device_public_key: key.public_key_hex(),
            evidence: None,
        };
        // signing needs the nonce the server just gave: the one device-side
        // step left inside the clock (tens of microseconds)
        let wire = key.sign(result).map_err(|e| e.to_string())?.to_json().map_err(|e| e.to_string())?;
        let submit_started = Instant::now();
        let answer = post(&format!("{base}/v1/sessions/{id}/result"), None, &wire)?;
        let submit_ms = submit_started.elapsed().as_secs_f64() * 1e3;
        if answer["decision"] != "pass" {
            return Err(format!("verification {i} answered {answer}"));
        }
        ureq::get(&format!("{base}/v1/sessions/{id}")).set("x-api-key", KEY).call().map_err(|e| e.to_string())?;
        Ok((started.elapsed().as_secs_f64() * 1e3, submit_ms))
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let cpu_before = process_cpu_ms(server.id());
    let started = Instant::now();
    let results: Vec<Result<(f64, f64), String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            break mine;
                        }
                        mine.push(verify_one(i));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu_ms = cpu_before.zip(process_cpu_ms(server.id())).map(|(a, b)| (b - a) / n as f64).unwrap_or(f64::NAN);
    let rss_mb = process_rss_mb(server.id()).unwrap_or(f64::NAN);
    let _ = server.kill();
    let _ = server.wait();
    let mut ok: Vec<(f64, f64)> = Vec::new();
    for r in results {
        ok.push(r?);
    }
    let total: Vec<f64> = ok.iter().map(|r| r.0).collect();
    let submit: Vec<f64> = ok.iter().map(|r| r.1).collect();
    let disk_mb = templates_disk_mb(db).unwrap_or(f64::NAN);
    Ok((n as f64 / elapsed, percentile(&total, 0.5), percentile(&total, 0.95), percentile(&total, 0.99), percentile(&submit, 0.5), server_cpu_ms, rss_mb, disk_mb))
}

/// The `q` quantile of `values` (nearest rank; `values` not empty).
fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// CPU time (user + system) a process has used so far, from /proc (Linux).
fn process_cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the fields after "pid (comm)": state is the first, utime the 12th, stime the 13th
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let per_second: f64 = have("getconf", "CLK_TCK").and_then(|t| t.trim().parse().ok()).unwrap_or(100.0);
    Some(ticks * 1000.0 / per_second)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("test") => match args.get(1).map(String::as_str) {
            None => test(),
            Some("server") => setup().and_then(|_| server_tests()),
            Some(other) => Err(format!("unknown test selection {other}: cargo xtask test [server]")),
        },
        Some("demo") => demo(),
        Some("bench") => bench(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3)),
        Some("setup") => setup(),
        Some("fetch-models") => fetch_models(),
        Some("build-www") => build_www(),
        Some("build-examples") => build_examples(),
        Some("eval") => build_cli().and_then(|_| eval::eval(&args[1..], &root())),
        Some("bench-server") => {
            // positional N and CONCURRENCY, and --templates T
            let templates = args.iter().position(|a| a == "--templates").and_then(|i| args.get(i + 1)).and_then(|t| t.parse().ok()).unwrap_or(0);
            let positional: Vec<&String> = args[1..].iter().enumerate().filter(|(i, a)| !a.starts_with("--") && args[*i] != "--templates").map(|(_, a)| a).collect();
            bench_server(positional.first().and_then(|a| a.parse().ok()).unwrap_or(400), positional.get(1).and_then(|a| a.parse().ok()).unwrap_or(8), templates)
        }
        Some("bench-search") => bench_search(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000)),
        Some("build-wasm") => {
            let target = args.get(1).map(String::as_str).unwrap_or("web");
            let out = if target == "nodejs" { root().join("target/wasm-node") } else { root().join("www/pkg") };
            build_wasm(target, &out)
        }
        _ => Err("usage: cargo xtask <test|demo|bench [REPS]|eval [--data DIR] [--out DIR] [--pairs CSV --images DIR] [--boxes XML|CSV] [--liveness CSV --liveness-images DIR] [--clips CSV]|bench-server [N] [CONCURRENCY] [--templates T]|bench-search [STORED]|build-wasm [web|nodejs]|build-www|build-examples|fetch-models|setup>".into()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_time_counts_this_process_work() {
        let before = process_cpu_ms(std::process::id()).expect("/proc/<pid>/stat readable");
        let started = Instant::now();
        let mut x = 0u64;
        while process_cpu_ms(std::process::id()).unwrap() < before + 50.0 && started.elapsed().as_secs() < 20 {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            }
        }
        std::hint::black_box(x);
        assert!(process_cpu_ms(std::process::id()).unwrap() >= before + 50.0, "CPU time did not grow with work");
    }

    /// `preload_templates` into a fresh SQLite file with the server's
    /// template tables (the DDL of server/src/db.rs, which xtask does not
    /// link), read back in sequence order with the sequence's last number.
    fn preloaded(dir: &Path, name: &str, count: usize, real: &[facegate::template::ProtectedTemplate], model: &FaceModel) -> (Vec<facegate::template::ProtectedTemplate>, String) {
        let db = dir.join(name).display().to_string();
        run(Command::new("sqlite3").arg(&db).arg(
            "CREATE TABLE face_templates (seq BIGINT NOT NULL PRIMARY KEY, session_id TEXT NOT NULL, subscriber_id TEXT NOT NULL, scheme TEXT NOT NULL,
             transform_key_id TEXT NOT NULL, storage_key_id TEXT NOT NULL, bits BYTEA NOT NULL, created_ms BIGINT NOT NULL);
             CREATE TABLE template_seq (id INTEGER NOT NULL PRIMARY KEY, last BIGINT NOT NULL); INSERT INTO template_seq VALUES (1, 0);",
        ))
        .unwrap();
        preload_templates(&db, count, dir, real, model).unwrap();
        let out = Command::new("sqlite3").arg(&db).arg("SELECT scheme, transform_key_id, storage_key_id, lower(hex(bits)) FROM face_templates ORDER BY seq").output().unwrap();
        let rows = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                facegate::template::ProtectedTemplate { scheme: f[0].into(), transform_key_id: f[1].into(), storage_key_id: Some(f[2].into()), bits: f[3].into() }
            })
            .collect();
        let last = Command::new("sqlite3").arg(&db).arg("SELECT last FROM template_seq").output().unwrap();
        (rows, String::from_utf8_lossy(&last.stdout).trim().to_string())
    }

    /// Mean cosine estimate over distinct pairs.
    fn mean_cosine(ts: &[facegate::template::ProtectedTemplate]) -> f32 {
        let mut sum = (0.0, 0);
        for (i, a) in ts.iter().enumerate() {
            for b in &ts[i + 1..] {
                sum = (sum.0 + a.cosine_estimate(b).unwrap(), sum.1 + 1);
            }
        }
        sum.0 / sum.1 as f32
    }

    #[test]
    fn preloaded_templates_are_sealed_numbered_and_drawn_like_the_real_ones() {
        let dir = std::env::temp_dir().join(format!("facegate-preload-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // "real" faces: embeddings around one direction, so that any two are
        // alike (cosine about 0.27), which independent draws would not be
        let transform = facegate::template::TransformKey::from_hex(BENCH_TRANSFORM_KEY, FACE_DIM).unwrap();
        let mut uniform = uniform_stream(1);
        let real: Vec<_> = (0..300)
            .map(|_| {
                let v: Vec<f32> = (0..FACE_DIM).map(|k| if k == 0 { 1.0 } else { 0.12 * (uniform() as f32 - 0.5) * 3.46 }).collect();
                let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
                transform.protect(&facegate::embed::Embedding(v.into_iter().map(|a| a / n).collect())).unwrap()
            })
            .collect();
        let model = FaceModel::fit(&real).unwrap();
        let (rows, last) = preloaded(&dir, "t.db", 340, &real[..3], &model);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((rows.len(), last.as_str()), (340, "340"));
        let storage = facegate::template::StorageKey::from_hex(BENCH_STORAGE_KEY).unwrap();
        assert_eq!(rows[0], storage.seal(&real[0]).unwrap(), "the real ones first, sealed as the server seals");
        // the synthetic ones are alike as the real ones are, and all distinct
        let (real_mean, drawn_mean) = (mean_cosine(&real), mean_cosine(&rows[3..]));
        assert!(real_mean > 0.2 && (real_mean - drawn_mean).abs() < 0.05, "real {real_mean} drawn {drawn_mean}");
        assert!(rows[3..].iter().all(|t| t.cosine_estimate(&rows[3]).unwrap() < 0.999 || t == &rows[3]));
    }
}
