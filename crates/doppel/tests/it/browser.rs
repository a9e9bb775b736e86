//! A headless Chromium driven over WebDriver (W3C protocol, spoken with the
//! blocking reqwest client the tests already use, so a browser test reads
//! like the others: no async runtime, no second HTTP or TLS stack).
//! Debian's `chromium` and `chromium-driver` (`scripts/setup.sh --test`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{free_port, workspace_root};

/// The key W3C WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait for the page lasts before the test fails saying what it waited for.
const WAIT: Duration = Duration::from_secs(90);

pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

/// A browser session. On drop (also when a test fails and unwinds) the
/// session is closed and the driver's whole process group is killed: the
/// browser is the driver's child, and Chromium's helpers its children, so
/// killing only the driver would leave them running.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::blocking::Client,
    /// Where `screenshot` saves.
    pub shots: PathBuf,
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

impl Browser {
    pub fn start() -> Browser {
        let driver_bin = which("chromedriver").expect(
            "chromedriver is missing: the browser test needs Debian's chromium and chromium-driver (scripts/setup.sh --test installs them)",
        );
        let chromium = which("chromium").expect(
            "chromium is missing: the browser test needs Debian's chromium (scripts/setup.sh --test installs it)",
        );
        let port = free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, which Chromium and its helpers join: one kill ends all.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("ui-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http,
            shots,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.http.get(format!("{}/status", b.base)).send().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                // Root in a container: Chromium's own sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,1000", "--lang=en-US"],
            },
        }}});
        let session = b.call("POST", "/session", Some(caps));
        b.base = format!(
            "{}/session/{}",
            b.base,
            session["sessionId"].as_str().unwrap()
        );
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body.unwrap_or(json!({}))),
        };
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        let ok = resp.status().is_success();
        let v: Value = resp.json().unwrap_or(Value::Null);
        assert!(ok, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    /// Like `call`, but a WebDriver error is an answer, not a failure.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(&url),
            _ => self.http.post(&url).json(&body.unwrap_or(json!({}))),
        };
        let resp = req.send().ok()?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().ok()?;
        ok.then(|| v["value"].clone())
    }

    /// The driver's pid, which is also its process group's id.
    pub fn process_group(&self) -> u32 {
        self.driver.id()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    /// Waits until `pass` answers Some, failing with `what` after [`WAIT`].
    pub fn wait<T>(&self, what: &str, mut pass: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = pass() {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.text_of("body").unwrap_or_default();
                panic!("waited in vain for {what}; the page says:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn find_now(&self, css: &str) -> Option<String> {
        let v = self.try_call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// Whether no element matches `css` now.
    pub fn find_none(&self, css: &str) -> bool {
        self.find_now(css).is_none()
    }

    /// Waits until no element matches `css`.
    pub fn wait_gone(&self, css: &str) {
        self.wait(&format!("{css} to go"), || {
            self.find_none(css).then_some(())
        });
    }

    /// The element `css` names, once it is there.
    pub fn find(&self, css: &str) -> String {
        self.wait(&format!("an element {css}"), || self.find_now(css))
    }

    /// The text of `css` now, if it is there.
    pub fn text_of(&self, css: &str) -> Option<String> {
        let id = self.find_now(css)?;
        self.try_call("GET", &format!("/element/{id}/text"), None)?
            .as_str()
            .map(str::to_owned)
    }

    /// Waits until `css` shows a text containing `needle`; returns the text.
    pub fn wait_text(&self, css: &str, needle: &str) -> String {
        self.wait(&format!("{css} to show {needle:?}"), || {
            self.text_of(css).filter(|t| t.contains(needle))
        })
    }

    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let id = self.find(css);
        self.call("GET", &format!("/element/{id}/attribute/{name}"), None)
            .as_str()
            .map(str::to_owned)
    }

    /// What an input holds now (its `value` property, not the attribute).
    pub fn value(&self, css: &str) -> String {
        let id = self.find(css);
        self.call("GET", &format!("/element/{id}/property/value"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/click"), None);
    }

    /// Types into `css` after emptying it.
    pub fn fill(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/clear"), None);
        self.keys_to(&id, text);
    }

    pub fn keys_to(&self, element: &str, text: &str) {
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        );
    }

    /// Types into whatever has the focus.
    pub fn type_keys(&self, text: &str) {
        let active = self.call("GET", "/element/active", None);
        self.keys_to(active[ELEMENT].as_str().unwrap(), text);
    }

    /// An attribute of the focused element (`id`, ...), read by script.
    pub fn focused(&self, what: &str) -> String {
        self.script(&format!("return document.activeElement.{what} || ''"))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Picks the option of `select` whose text contains `needle`.
    pub fn choose(&self, select: &str, needle: &str) {
        let n = self.wait(&format!("an option {needle:?} in {select}"), || {
            let v = self.script(&format!(
                "return [...document.querySelectorAll({:?} + ' option')].findIndex(o => o.textContent.includes({:?}))",
                select, needle
            ));
            v.as_i64().filter(|i| *i >= 0)
        });
        self.click(&format!("{select} option:nth-child({})", n + 1));
    }

    pub fn script(&self, js: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }

    /// Saves a PNG of the window as `<shots>/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Runs axe-core (from the UI's npm dependencies) in the page; fails
    /// on any serious or critical violation, naming rule and elements.
    pub fn assert_accessible(&self, screen: &str) {
        let axe = workspace_root().join("ui/node_modules/axe-core/axe.min.js");
        let source = std::fs::read_to_string(&axe).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run scripts/setup.sh (npm ci in ui/)",
                axe.display()
            )
        });
        let js = format!(
            "{source}\nconst done = arguments[arguments.length - 1];\n\
             axe.run(document, {{resultTypes: ['violations']}}).then(r => done(r.violations.map(v => ({{id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}}))), e => done([{{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}}]));"
        );
        let found = self.call(
            "POST",
            "/execute/async",
            Some(json!({"script": js, "args": []})),
        );
        let serious: Vec<&Value> = found
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(
            serious.is_empty(),
            "axe-core on the {screen} screen: {}",
            serde_json::to_string_pretty(&serious).unwrap()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.base.contains("/session/") {
            // A hung browser must not hold the test up: the kill below ends it anyway.
            let _ = self
                .http
                .delete(&self.base)
                .timeout(Duration::from_secs(10))
                .send();
        }
        // SAFETY: kill(2) on the group this Browser made (its pgid is the driver's pid).
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

/// The processes of group `pgid` still alive (not zombies), from /proc.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // Fields after the command's closing parenthesis: state, ppid, pgrp.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
                    Some(rest.first()? != &"Z" && rest.get(2)?.parse::<u32>().ok()? == pgid)
                })
                .unwrap_or(false)
        })
        .collect()
}
