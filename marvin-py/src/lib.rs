//! Python bindings: the native module `marvin._marvin`, wrapped by the
//! pure-Python package `marvin` (marvin-py/python/marvin), which turns the
//! plain dicts returned here into objects with attributes.
//!
//! Thin by design: every operation is a call into marvin-core
//! ([`Marvin::plan`], [`Runtime::submit`], [`commands`]); this crate
//! translates arguments, releases the GIL while it waits, forwards job
//! events to a Python callback, turns Ctrl-C into a job cancel and maps
//! errors onto the exception hierarchy. The console's messages are reused
//! verbatim ([`report::summary_text`], the errors' `Display`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use marvin_core::chat::{Answer, Chat, Reply, Tone};
use marvin_core::command::{Command, Verb};
use marvin_core::commands::{self, CommandError};
use marvin_core::config::ConfigError as CoreConfigError;
use marvin_core::engine::{DockerEngine, Engine, EngineError, LABEL_PROJECT};
use marvin_core::marvin::{DATA_DIR_ENV, Marvin, MarvinError as CoreMarvinError, PlanOptions};
use marvin_core::report;
use marvin_core::runtime::{
    Clock, JobEvent, JobKind, JobSummary, Runtime, SubmitError, SystemClock,
};
use marvin_core::store::{JobId, JobState, Lock, Store};
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;
use tokio::sync::mpsc;

pyo3::create_exception!(
    marvin,
    MarvinError,
    PyException,
    "Base of every error Marvin raises; the message is the one the console prints."
);
pyo3::create_exception!(
    marvin,
    ConfigError,
    MarvinError,
    "marvin.yml is missing or wrong, or names an unknown environment, task or service. Attributes: file, line, column, path (None when unknown)."
);
pyo3::create_exception!(
    marvin,
    PermissionDenied,
    MarvinError,
    "The identity's role does not allow the command in this environment."
);
pyo3::create_exception!(
    marvin,
    Locked,
    MarvinError,
    "Someone else holds the environment's lock. Attributes: env, holder, reason, since_ms, until_ms (None: until unlocked)."
);
pyo3::create_exception!(
    marvin,
    EngineUnavailable,
    MarvinError,
    "No Docker engine answers (dockerd not running, or DOCKER_HOST wrong)."
);
pyo3::create_exception!(
    marvin,
    NotFound,
    MarvinError,
    "A job or container that was asked for does not exist."
);
pyo3::create_exception!(
    marvin,
    JobFailed,
    MarvinError,
    "A job ended without succeeding. Attribute: result (the job's summary)."
);
pyo3::create_exception!(
    marvin,
    BuildFailed,
    JobFailed,
    "A build job failed while fetching, planning or building images; no container was changed."
);
pyo3::create_exception!(
    marvin,
    DeployFailed,
    JobFailed,
    "A build or rollback failed while deploying (or in a deploy hook); changed containers were put back."
);
pyo3::create_exception!(
    marvin,
    TaskFailed,
    JobFailed,
    "A task did not run or exited non-zero. Attribute: exit_code (None when it never ran)."
);
pyo3::create_exception!(
    marvin,
    JobCancelled,
    JobFailed,
    "The job was cancelled (from another process, or by `cancel`)."
);

/// The tokio runtime every call runs on (shared with asyncio awaitables).
fn tokio_rt() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// A JSON value as the Python value `json.loads` would give.
fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

fn json_of<T: serde::Serialize>(value: &T) -> PyResult<Value> {
    serde_json::to_value(value).map_err(|e| MarvinError::new_err(format!("internal error: {e}")))
}

fn to_py_json<T: serde::Serialize>(py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
    Ok(to_py(py, &json_of(value)?)?.unbind())
}

/// An exception of type `E` with extra attributes.
fn raise<E: pyo3::PyTypeInfo>(message: String, attrs: Vec<(&'static str, Value)>) -> PyErr {
    let err = PyErr::new::<E, _>(message);
    Python::attach(|py| {
        let value = err.value(py);
        for (name, v) in attrs {
            if let Ok(v) = to_py(py, &v) {
                let _ = value.setattr(name, v);
            }
        }
    });
    err
}

fn config_error(e: &CoreConfigError) -> PyErr {
    let (file, line, column, path) = match e {
        CoreConfigError::Yaml(y) => (
            y.file.clone(),
            y.location.map(|l| l.line),
            y.location.map(|l| l.column),
            y.path.clone(),
        ),
        CoreConfigError::Invalid { file, path, .. } => {
            (file.clone(), None, None, Some(path.clone()))
        }
    };
    raise::<ConfigError>(
        e.to_string(),
        vec![
            ("file", Value::from(file)),
            ("line", line.map(Value::from).unwrap_or(Value::Null)),
            ("column", column.map(Value::from).unwrap_or(Value::Null)),
            ("path", path.map(Value::from).unwrap_or(Value::Null)),
        ],
    )
}

fn core_error(e: &CoreMarvinError) -> PyErr {
    match e {
        CoreMarvinError::Config(c) => config_error(c),
        CoreMarvinError::NoConfig(m) => raise::<ConfigError>(
            m.clone(),
            vec![
                ("file", Value::Null),
                ("line", Value::Null),
                ("column", Value::Null),
                ("path", Value::Null),
            ],
        ),
        CoreMarvinError::Engine(EngineError::Unreachable { .. }) => {
            EngineUnavailable::new_err(e.to_string())
        }
        other => MarvinError::new_err(other.to_string()),
    }
}

fn locked_error(lock: &Lock, message: String) -> PyErr {
    raise::<Locked>(
        message,
        vec![
            ("env", Value::from(lock.env.clone())),
            ("holder", Value::from(lock.holder.clone())),
            ("reason", Value::from(lock.reason.clone())),
            ("since_ms", Value::from(lock.since_ms)),
            (
                "until_ms",
                lock.until_ms.map(Value::from).unwrap_or(Value::Null),
            ),
        ],
    )
}

fn command_error(e: CommandError) -> PyErr {
    match e {
        CommandError::PermissionDenied(m) => PermissionDenied::new_err(m),
        CommandError::Locked { lock, message } => locked_error(&lock, message),
        CommandError::NotFound(m) => NotFound::new_err(m),
        CommandError::NoEngine => EngineUnavailable::new_err(CommandError::NoEngine.to_string()),
        CommandError::Marvin(m) => core_error(&m),
        other => MarvinError::new_err(other.to_string()),
    }
}

fn submit_error(e: SubmitError) -> PyErr {
    match e {
        SubmitError::Marvin(m) => core_error(&m),
        other => MarvinError::new_err(other.to_string()),
    }
}

/// A finished job: its summary as a dict, or the exception its failure maps to.
fn job_outcome(py: Python<'_>, summary: &JobSummary) -> PyResult<Py<PyAny>> {
    let mut result = json_of(summary)?;
    if let Value::Object(map) = &mut result {
        // Beside the summary's keys: the text the console prints.
        map.insert(
            "_text".into(),
            Value::from(report::summary_text(summary).trim_end()),
        );
    }
    if summary.state == Some(JobState::Succeeded) {
        return Ok(to_py(py, &result)?.unbind());
    }
    let message = report::summary_text(summary).trim_end().to_string();
    let mut attrs = vec![("result", result)];
    let step = summary.failed_step.as_deref().unwrap_or("");
    Err(match summary.state {
        Some(JobState::Cancelled) => raise::<JobCancelled>(message, attrs),
        _ if summary.verb == "run" => {
            attrs.push((
                "exit_code",
                summary.exit_code.map(Value::from).unwrap_or(Value::Null),
            ));
            raise::<TaskFailed>(message, attrs)
        }
        _ if matches!(step, "fetch" | "plan" | "build") => raise::<BuildFailed>(message, attrs),
        _ => raise::<DeployFailed>(message, attrs),
    })
}

/// An event as the dict `on_event` receives: `job`, `env`, `event` and the event's fields.
fn event_json(event: &JobEvent) -> Value {
    let mut value = serde_json::to_value(&event.kind).unwrap_or_default();
    if let Value::Object(map) = &mut value {
        map.insert("job".into(), Value::from(event.job));
        map.insert("env".into(), Value::from(event.env.clone()));
    }
    value
}

/// What the job's forwarder sends: its events in order, then its summary.
enum JobMessage {
    Event(Value),
    Done(Box<JobSummary>),
}

/// Cancels the job when dropped before it ended (an abandoned awaitable).
struct CancelOnDrop {
    runtime: Runtime,
    id: JobId,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.runtime.cancel(self.id);
        }
    }
}

/// A Marvin project loaded from its marvin.yml, acting as one identity.
#[pyclass(module = "marvin._marvin", name = "Project", frozen)]
struct PyProject {
    marvin: Marvin,
    identity: String,
    store: Store,
    /// Created on the first job and shared by every identity of this project.
    runtime: Arc<OnceLock<Runtime>>,
}

fn identity_of(identity: Option<String>) -> String {
    let name = identity.unwrap_or_else(|| {
        std::env::var("MARVIN_PY_IDENTITY")
            .or_else(|_| std::env::var("USER"))
            .or_else(|_| std::env::var("USERNAME"))
            .unwrap_or_else(|_| "someone".into())
    });
    if name.contains(':') {
        name
    } else {
        format!("py:{name}")
    }
}

impl PyProject {
    fn engine(&self) -> PyResult<Arc<dyn Engine>> {
        self.marvin
            .engine
            .clone()
            .ok_or_else(|| command_error(CommandError::NoEngine))
    }

    /// The job runtime, made (and the engine pinged) on first use.
    fn job_runtime(&self, py: Python<'_>) -> PyResult<Runtime> {
        if let Some(r) = self.runtime.get() {
            return Ok(r.clone());
        }
        let engine = self.engine()?;
        let marvin = self.marvin.clone();
        let store = self.store.clone();
        let made = py.detach(|| {
            tokio_rt().block_on(async move {
                match tokio::time::timeout(Duration::from_secs(5), engine.ping()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(EngineUnavailable::new_err(e.to_string())),
                    Err(_) => {
                        return Err(EngineUnavailable::new_err(
                            "the Docker engine does not answer; is dockerd running (or DOCKER_HOST right)?",
                        ));
                    }
                }
                Runtime::new(marvin, engine, store, Arc::new(SystemClock)).map_err(submit_error)
            })
        })?;
        Ok(self.runtime.get_or_init(|| made).clone())
    }

    /// The door every command of this identity goes through (origin
    /// `python`): judged, lock-checked and audited like a chat message.
    fn door(&self, py: Python<'_>, env: &str, verb: Verb) -> PyResult<(Runtime, Reply)> {
        let runtime = self.job_runtime(py)?;
        let chat = Chat::new(runtime.clone());
        let person = chat.person(&self.identity, "python");
        let env = self
            .marvin
            .project
            .environment(env)
            .map(|e| e.name.clone())
            .unwrap_or_else(|_| env.to_string());
        let command = Command {
            env: Some(env),
            verb,
        };
        let reply = py.detach(|| tokio_rt().block_on(chat.door(&person, &command)));
        Ok((runtime, reply))
    }

    /// The exception for an answer that is not a success.
    fn refusal(&self, env: &str, answer: &Answer) -> PyErr {
        let text = answer.text.clone();
        let data = answer.data.clone().unwrap_or(Value::Null);
        match data["refused"].as_str() {
            Some("permission") => PermissionDenied::new_err(text),
            Some("locked") => match serde_json::from_value::<Lock>(data["lock"].clone()) {
                Ok(lock) => locked_error(&lock, text),
                Err(_) => MarvinError::new_err(text),
            },
            Some("not_found") => NotFound::new_err(text),
            Some("config") => match self.marvin.project.environment(env) {
                Err(e) => config_error(&e),
                Ok(_) => MarvinError::new_err(text),
            },
            Some("no_engine") => EngineUnavailable::new_err(text),
            _ => MarvinError::new_err(text),
        }
    }

    /// A command answered at once: its data, or the exception of its refusal.
    fn answered(&self, py: Python<'_>, env: &str, verb: Verb) -> PyResult<Value> {
        match self.door(py, env, verb)?.1 {
            Reply::Answer(a) if a.tone == Tone::Info => Ok(a.data.unwrap_or(Value::Null)),
            Reply::Answer(a) => Err(self.refusal(env, &a)),
            Reply::Ignored => Err(MarvinError::new_err("the command was ignored")),
            Reply::Job(f) => Err(MarvinError::new_err(format!(
                "internal error: job #{} started by a command that starts none",
                f.job
            ))),
        }
    }

    /// Check, persist and start a job through the door; its events and
    /// summary arrive on the receiver.
    fn start(
        &self,
        py: Python<'_>,
        env: &str,
        kind: JobKind,
    ) -> PyResult<(Runtime, JobId, mpsc::UnboundedReceiver<JobMessage>)> {
        let runtime = self.job_runtime(py)?;
        let _context = tokio_rt().enter();
        // Subscribe before submitting, so no event of the job is missed.
        let mut events = runtime.subscribe();
        let follow = match self.door(py, env, commands::verb_of(&kind))?.1 {
            Reply::Job(follow) => follow,
            Reply::Answer(a) => return Err(self.refusal(env, &a)),
            Reply::Ignored => return Err(MarvinError::new_err("the command was ignored")),
        };
        let id = follow.job;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio_rt().spawn(async move {
            let wait = follow.summary();
            tokio::pin!(wait);
            let forward = |event: JobEvent| {
                if event.job == id {
                    let _ = tx.send(JobMessage::Event(event_json(&event)));
                }
            };
            let summary = loop {
                tokio::select! {
                    biased;
                    event = events.recv() => match event {
                        Ok(event) => forward(event),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break (&mut wait).await,
                    },
                    summary = &mut wait => break summary,
                }
            };
            // The job emits its last event before it returns: pass on what is buffered.
            while let Ok(event) = events.try_recv() {
                forward(event);
            }
            let _ = tx.send(JobMessage::Done(Box::new(summary)));
        });
        Ok((runtime, id, rx))
    }

    /// Run a job to its end with the GIL released, calling `on_event` with
    /// each event. Ctrl-C (or an exception from `on_event`) cancels the job,
    /// waits for it to stop cleanly, then raises.
    fn run_blocking(
        &self,
        py: Python<'_>,
        env: &str,
        kind: JobKind,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let (runtime, id, mut rx) = self.start(py, env, kind)?;
        let mut pending: Option<PyErr> = None;
        loop {
            // Wake at least every 100ms, so Ctrl-C is noticed while the job is quiet.
            let (batch, closed) = py.detach(|| {
                tokio_rt().block_on(async {
                    let mut batch = Vec::new();
                    let first = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
                    let closed = matches!(first, Ok(None));
                    if let Ok(Some(m)) = first {
                        batch.push(m);
                    }
                    while let Ok(m) = rx.try_recv() {
                        batch.push(m);
                    }
                    (batch, closed)
                })
            });
            if closed && batch.is_empty() {
                return Err(pending.unwrap_or_else(|| {
                    MarvinError::new_err("internal error: the job ended without a summary")
                }));
            }
            for message in batch {
                match message {
                    JobMessage::Event(event) => {
                        if let (Some(callback), None) = (&on_event, &pending)
                            && let Err(e) = callback.call1(py, (to_py(py, &event)?,))
                        {
                            runtime.cancel(id);
                            pending = Some(e);
                        }
                    }
                    JobMessage::Done(summary) => {
                        return match pending {
                            Some(e) => Err(e),
                            None => job_outcome(py, &summary),
                        };
                    }
                }
            }
            if pending.is_none()
                && let Err(interrupt) = py.check_signals()
            {
                runtime.cancel(id);
                pending = Some(interrupt);
            }
        }
    }

    /// The same job as an asyncio awaitable; abandoning it cancels the job.
    fn run_async<'py>(
        &self,
        py: Python<'py>,
        env: &str,
        kind: JobKind,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (runtime, id, mut rx) = self.start(py, env, kind)?;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut guard = CancelOnDrop {
                runtime,
                id,
                armed: true,
            };
            while let Some(message) = rx.recv().await {
                match message {
                    JobMessage::Event(event) => {
                        if let Some(callback) = &on_event {
                            Python::attach(|py| -> PyResult<()> {
                                callback.call1(py, (to_py(py, &event)?,))?;
                                Ok(())
                            })?;
                        }
                    }
                    JobMessage::Done(summary) => {
                        guard.armed = false;
                        return Python::attach(|py| job_outcome(py, &summary));
                    }
                }
            }
            Err(MarvinError::new_err(
                "internal error: the job ended without a summary",
            ))
        })
    }

    fn plan_json(
        &self,
        py: Python<'_>,
        env: &str,
        services: Vec<String>,
        force: bool,
        offline: bool,
    ) -> PyResult<Value> {
        let marvin = self.marvin.clone();
        let env = env.to_string();
        py.detach(|| {
            tokio_rt().block_on(async move {
                let plan = marvin
                    .plan(
                        &env,
                        &PlanOptions {
                            services,
                            force,
                            offline,
                        },
                    )
                    .await
                    .map_err(|e| core_error(&e))?;
                let mut value = json_of(&report::PlanJson::from(&plan))?;
                if let Value::Object(map) = &mut value {
                    // Beside the CLI's keys: the text the console prints.
                    map.insert("_text".into(), Value::from(report::plan_text(&plan)));
                }
                Ok(value)
            })
        })
    }
}

fn kind_build(services: Option<Vec<String>>, force: bool) -> JobKind {
    JobKind::Build {
        services: services.unwrap_or_default(),
        force,
    }
}

#[pymethods]
impl PyProject {
    /// Load the project whose marvin.yml is `path` (a file, or a directory
    /// searched upwards). `identity` is who calls act as: `NAME` becomes
    /// `py:NAME`; default `py:$MARVIN_PY_IDENTITY` or `py:$USER`. `data_dir`
    /// defaults to `$MARVIN_DATA_DIR`, else `.marvin/` beside marvin.yml.
    #[staticmethod]
    #[pyo3(signature = (path, identity=None, data_dir=None))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        identity: Option<String>,
        data_dir: Option<PathBuf>,
    ) -> PyResult<PyProject> {
        let config = if path.is_dir() {
            marvin_core::marvin::find_config(&path).ok_or_else(|| {
                core_error(&CoreMarvinError::NoConfig(format!(
                    "no marvin.yml in {} or any parent directory",
                    path.display()
                )))
            })?
        } else {
            path
        };
        let data_dir = data_dir.or_else(|| std::env::var_os(DATA_DIR_ENV).map(PathBuf::from));
        let marvin = py
            .detach(|| Marvin::load(&config, data_dir))
            .map_err(|e| core_error(&e))?;
        let marvin = {
            let _context = tokio_rt().enter();
            match DockerEngine::connect() {
                Ok(engine) => marvin.with_engine(Arc::new(engine)),
                Err(_) => marvin,
            }
        };
        let store =
            Store::open_in(&marvin.data_dir).map_err(|e| MarvinError::new_err(e.to_string()))?;
        Ok(PyProject {
            marvin,
            identity: identity_of(identity),
            store,
            runtime: Arc::new(OnceLock::new()),
        })
    }

    /// The same project acting as another identity (`NAME` → `py:NAME`).
    fn with_identity(&self, identity: String) -> PyProject {
        PyProject {
            marvin: self.marvin.clone(),
            identity: identity_of(Some(identity)),
            store: self.store.clone(),
            runtime: Arc::clone(&self.runtime),
        }
    }

    /// The project's name (marvin.yml `project`).
    #[getter]
    fn name(&self) -> String {
        self.marvin.project.name.clone()
    }

    /// Who calls act as, e.g. `py:alice`.
    #[getter]
    fn identity(&self) -> String {
        self.identity.clone()
    }

    /// The identity's role: `viewer`, `developer` or `admin`.
    #[getter]
    fn role(&self) -> PyResult<String> {
        let role = json_of(&self.marvin.project.role_of(&self.identity))?;
        Ok(role.as_str().unwrap_or_default().to_string())
    }

    /// The marvin.yml this was loaded from.
    #[getter]
    fn config_path(&self) -> PathBuf {
        self.marvin.config_path.clone()
    }

    /// Where mirrors and the state database live.
    #[getter]
    fn data_dir(&self) -> PathBuf {
        self.marvin.data_dir.clone()
    }

    /// The environments' names, in marvin.yml order.
    #[getter]
    fn environments(&self) -> Vec<String> {
        self.marvin
            .project
            .environments
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }

    /// The plan for `env` as a dict with the keys of `marvin plan --json`
    /// (plus `_text`, the console's rendering). Changes nothing.
    #[pyo3(signature = (env, services=None, force=false, offline=false))]
    fn plan(
        &self,
        py: Python<'_>,
        env: &str,
        services: Option<Vec<String>>,
        force: bool,
        offline: bool,
    ) -> PyResult<Py<PyAny>> {
        let value = self.plan_json(py, env, services.unwrap_or_default(), force, offline)?;
        Ok(to_py(py, &value)?.unbind())
    }

    /// Fetch, build what changed and deploy what changed in `env`; returns
    /// the job's summary dict, raises on failure.
    #[pyo3(signature = (env, services=None, force=false, on_event=None))]
    fn build(
        &self,
        py: Python<'_>,
        env: &str,
        services: Option<Vec<String>>,
        force: bool,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.run_blocking(py, env, kind_build(services, force), on_event)
    }

    /// `build` as an asyncio awaitable.
    #[pyo3(signature = (env, services=None, force=false, on_event=None))]
    fn build_async<'py>(
        &self,
        py: Python<'py>,
        env: &str,
        services: Option<Vec<String>>,
        force: bool,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run_async(py, env, kind_build(services, force), on_event)
    }

    /// Run the task `task` with `args` appended in `env`; returns the summary dict.
    #[pyo3(signature = (env, task, args=None, on_event=None))]
    fn run_task(
        &self,
        py: Python<'_>,
        env: &str,
        task: String,
        args: Option<Vec<String>>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let kind = JobKind::Run {
            task,
            args: args.unwrap_or_default(),
        };
        self.run_blocking(py, env, kind, on_event)
    }

    /// `run_task` as an asyncio awaitable.
    #[pyo3(signature = (env, task, args=None, on_event=None))]
    fn run_task_async<'py>(
        &self,
        py: Python<'py>,
        env: &str,
        task: String,
        args: Option<Vec<String>>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kind = JobKind::Run {
            task,
            args: args.unwrap_or_default(),
        };
        self.run_async(py, env, kind, on_event)
    }

    /// Redeploy the deployment of job `job` (default: the one before the current).
    #[pyo3(signature = (env, job=None, on_event=None))]
    fn rollback(
        &self,
        py: Python<'_>,
        env: &str,
        job: Option<JobId>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.run_blocking(py, env, JobKind::Rollback { job }, on_event)
    }

    /// `rollback` as an asyncio awaitable.
    #[pyo3(signature = (env, job=None, on_event=None))]
    fn rollback_async<'py>(
        &self,
        py: Python<'py>,
        env: &str,
        job: Option<JobId>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run_async(py, env, JobKind::Rollback { job }, on_event)
    }

    /// The containers of `env`, its lock and its last job, as `marvin status --json`.
    fn status(&self, py: Python<'_>, env: &str) -> PyResult<Py<PyAny>> {
        let (marvin, store, env) = (self.marvin.clone(), self.store.clone(), env.to_string());
        let status = py
            .detach(|| {
                tokio_rt().block_on(async move {
                    commands::status(&marvin, &store, &env, now_ms()).await
                })
            })
            .map_err(command_error)?;
        to_py_json(py, &status)
    }

    /// The newest `n` jobs of `env`, newest first.
    #[pyo3(signature = (env, n=10))]
    fn history(&self, py: Python<'_>, env: &str, n: usize) -> PyResult<Py<PyAny>> {
        let jobs = py
            .detach(|| commands::history(&self.marvin, &self.store, env, n))
            .map_err(command_error)?;
        to_py_json(py, &jobs)
    }

    /// The last `tail` lines of a job's log (`target` a job number, default
    /// the last job) or of a service's container (`target` a service name).
    #[pyo3(signature = (env, target=None, tail=100))]
    fn logs(
        &self,
        py: Python<'_>,
        env: &str,
        target: Option<Bound<'_, PyAny>>,
        tail: usize,
    ) -> PyResult<Vec<String>> {
        let target = match target {
            None => None,
            Some(t) => Some(t.str()?.to_string()),
        };
        let target = target.as_deref().map(commands::log_target);
        let (marvin, store, env) = (self.marvin.clone(), self.store.clone(), env.to_string());
        py.detach(|| {
            tokio_rt().block_on(async move {
                commands::logs(&marvin, &store, &env, target.as_ref(), tail).await
            })
        })
        .map_err(command_error)
    }

    /// Lock `env` for `duration` (`30m`, `2h`; None: the default, 2h) with a
    /// reason; renews the caller's own lock; `force`: an admin taking
    /// someone else's. Returns the lock as a dict.
    #[pyo3(signature = (env, duration=None, reason=String::new(), force=false))]
    fn lock(
        &self,
        py: Python<'_>,
        env: &str,
        duration: Option<String>,
        reason: String,
        force: bool,
    ) -> PyResult<Py<PyAny>> {
        let duration = duration
            .map(|d| marvin_core::duration::parse(&d))
            .transpose()
            .map_err(PyValueError::new_err)?;
        let verb = Verb::Lock {
            duration,
            reason,
            force,
        };
        let lock = self.answered(py, env, verb)?;
        to_py(py, &lock).map(Bound::unbind)
    }

    /// Release `env`'s lock (`force`: an admin releasing someone else's).
    /// Returns the released lock as a dict, or None when there was none.
    #[pyo3(signature = (env, force=false))]
    fn unlock(&self, py: Python<'_>, env: &str, force: bool) -> PyResult<Py<PyAny>> {
        let data = self.answered(py, env, Verb::Unlock { force })?;
        to_py(py, &data["released"]).map(Bound::unbind)
    }

    /// Ask `env`'s running job (or job `job`) to stop, as `marvin cancel`
    /// does: the requester, admins, and developers on unprotected
    /// environments may. Returns the job's number; the process running it
    /// stops it within a second.
    #[pyo3(signature = (env, job=None))]
    fn cancel(&self, py: Python<'_>, env: &str, job: Option<JobId>) -> PyResult<JobId> {
        let data = self.answered(py, env, Verb::Cancel { job })?;
        data["job"]
            .as_i64()
            .ok_or_else(|| MarvinError::new_err("internal error: no job in the answer"))
    }

    /// Remove every container, network, volume and image labelled with this
    /// project from the engine (what `marvin demo --clean` does for the demo).
    fn remove_engine_objects(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.engine()?;
        let labels = std::collections::BTreeMap::from([(
            LABEL_PROJECT.to_string(),
            self.marvin.project.name.clone(),
        )]);
        py.detach(|| tokio_rt().block_on(async move { engine.remove_labelled(&labels).await }))
            .map_err(|e| core_error(&CoreMarvinError::Engine(e)))
    }

    fn __repr__(&self) -> String {
        format!(
            "<marvin.Project {} at {} as {}>",
            self.marvin.project.name,
            self.marvin.config_path.display(),
            self.identity
        )
    }
}

/// Create the demo project (two git repos, five services, two environments)
/// in `dir`, named `project`, and make sure its busybox base image exists on
/// the engine. Returns the path of its marvin.yml.
#[pyfunction]
#[pyo3(signature = (dir, project=None))]
fn create_demo(py: Python<'_>, dir: PathBuf, project: Option<String>) -> PyResult<PathBuf> {
    py.detach(|| {
        tokio_rt().block_on(async move {
            let engine =
                DockerEngine::connect().map_err(|e| EngineUnavailable::new_err(e.to_string()))?;
            engine
                .ping()
                .await
                .map_err(|e| EngineUnavailable::new_err(e.to_string()))?;
            let labels = std::collections::BTreeMap::from([(
                LABEL_PROJECT.to_string(),
                marvin_core::demo::DEMO_PROJECT.to_string(),
            )]);
            marvin_core::engine::ensure_busybox_image(
                &engine,
                marvin_core::demo::DEMO_BASE_IMAGE,
                &labels,
            )
            .await
            .map_err(|e| MarvinError::new_err(e.to_string()))?;
            let config =
                marvin_core::demo::create(&dir).map_err(|e| MarvinError::new_err(e.to_string()))?;
            if let Some(name) = project {
                rename_project(&config, &name)?;
            }
            Ok(config)
        })
    })
}

/// Give a demo project another name, so several can live on one engine.
fn rename_project(config: &Path, name: &str) -> PyResult<()> {
    let text = std::fs::read_to_string(config).map_err(|e| MarvinError::new_err(e.to_string()))?;
    let from = format!("project: {}\n", marvin_core::demo::DEMO_PROJECT);
    let renamed = text.replacen(&from, &format!("project: {name}\n"), 1);
    std::fs::write(config, renamed).map_err(|e| MarvinError::new_err(e.to_string()))
}

/// The native half of the `marvin` package.
#[pymodule]
fn _marvin(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyProject>()?;
    m.add_function(wrap_pyfunction!(create_demo, m)?)?;
    m.add("MarvinError", py.get_type::<MarvinError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("PermissionDenied", py.get_type::<PermissionDenied>())?;
    m.add("Locked", py.get_type::<Locked>())?;
    m.add("EngineUnavailable", py.get_type::<EngineUnavailable>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("JobFailed", py.get_type::<JobFailed>())?;
    m.add("BuildFailed", py.get_type::<BuildFailed>())?;
    m.add("DeployFailed", py.get_type::<DeployFailed>())?;
    m.add("TaskFailed", py.get_type::<TaskFailed>())?;
    m.add("JobCancelled", py.get_type::<JobCancelled>())?;
    Ok(())
}
