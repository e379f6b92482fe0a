//! The container engine port: what Marvin asks of Docker.
//!
//! The port executes; it decides nothing (the planner decides). Everything it
//! creates carries the `LABEL_*` labels below. The real implementation is
//! `DockerEngine` (bollard; the local socket or `DOCKER_HOST`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod base_image;
pub mod buildkit;
mod buildkit_api;
pub mod docker;
pub mod swarm;

pub use base_image::{BUSYBOX_PATH, ensure_busybox_image};
pub use docker::DockerEngine;
pub use swarm::{ObservedSwarmService, ObservedTask, RegistryAuth, SwarmEngine};

/// Label: the project an object belongs to.
pub const LABEL_PROJECT: &str = "io.marvin.project";
/// Label: the environment a container, network or volume belongs to.
pub const LABEL_ENV: &str = "io.marvin.env";
/// Label: the compose service.
pub const LABEL_SERVICE: &str = "io.marvin.service";
/// Label: the deploy key of a container (ARCHITECTURE.md, `keys`).
pub const LABEL_DEPLOY_KEY: &str = "io.marvin.deploy-key";
/// Label: the full build key of an image, or of the image a container runs.
pub const LABEL_BUILD_KEY: &str = "io.marvin.build-key";
/// Label: the source commits (`repo=commit,...`).
pub const LABEL_COMMITS: &str = "io.marvin.commits";
/// Label: what a container is for: `service` or `task`.
pub const LABEL_ROLE: &str = "io.marvin.role";

/// A fully resolved container, as the planner wants it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ContainerSpec {
    /// Container name: `<project>-<env>-<service>`.
    pub name: String,
    /// Image tag to run.
    pub image: String,
    /// Replaces the image's CMD.
    pub command: Option<Vec<String>>,
    /// Replaces the image's ENTRYPOINT.
    pub entrypoint: Option<Vec<String>>,
    /// The final environment, in order.
    pub env: Vec<(String, String)>,
    /// Labels, including Marvin's.
    pub labels: BTreeMap<String, String>,
    /// The environment's network: `marvin-<project>-<env>`.
    pub network: String,
    /// Names this container answers to on that network (service name, link aliases).
    pub aliases: Vec<String>,
    /// Published ports.
    pub ports: Vec<PortBinding>,
    /// Exposed (unpublished) ports, e.g. `8080` or `8080/udp`.
    pub expose: Vec<String>,
    /// Volumes and bind mounts.
    pub volumes: Vec<Mount>,
    /// Health check, if the service has one.
    pub healthcheck: Option<Health>,
    /// Restart policy (`no`, `always`, `on-failure`, `unless-stopped`).
    pub restart: Option<String>,
    /// Working directory inside the container.
    pub working_dir: Option<String>,
    /// User to run as.
    pub user: Option<String>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// Replicas (compose `deploy.replicas`), set for swarm environments only:
    /// left out of the encoding when unset, so single-engine deploy keys do not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    /// Further compose fields applied to the container (stop signal, init,
    /// capabilities, ulimits, ...): left out of the encoding when all unset,
    /// so deploy keys of services that use none of them do not change.
    #[serde(default, skip_serializing_if = "ContainerOptions::is_empty")]
    pub options: ContainerOptions,
}

/// Compose service fields applied to a container beyond the basics
/// (docs/compose.md lists how each is read). Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerOptions {
    /// `stop_signal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `stop_grace_period`, in whole seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_s: Option<i64>,
    /// `init`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// `tty`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,
    /// `stdin_open`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    /// `read_only`: the root filesystem is read-only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// `hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `extra_hosts`, as `host:ip`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// `dns` servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// `shm_size`, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    /// `tmpfs` mounts: container path to mount options (may be empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tmpfs: BTreeMap<String, String>,
    /// `ulimits`: name to (soft, hard).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, (i64, i64)>,
    /// `sysctls`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `cap_drop`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// `cap_add` (only when the environment allows it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// `privileged` (only when the environment allows it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    /// `devices`, as `host:container[:permissions]` (only when allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// `pid` (`host`, only when allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// `ipc` (`host` only when allowed; `private`, `shareable`, `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    /// `network_mode: host` (only when allowed): no environment network.
    #[serde(default, skip_serializing_if = "is_false")]
    pub host_network: bool,
    /// `runtime` (only when allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// `security_opt` (only when allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Memory reservation in bytes (`mem_reservation`, `deploy.resources.reservations.memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i64>,
    /// CPU shares from `deploy.resources.reservations.cpus` (1024 per CPU) or `cpu_shares`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<i64>,
    /// `pids_limit` or `deploy.resources.limits.pids`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// `logging.driver`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<String>,
    /// `logging.options`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub log_options: BTreeMap<String, String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ContainerOptions {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == ContainerOptions::default()
    }
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// Host address to bind, if not all.
    pub host_ip: Option<String>,
    /// Host port; `None` lets the engine choose.
    pub host_port: Option<u16>,
    /// Port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Something mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mount {
    /// A named volume (already prefixed per environment).
    Named {
        /// Volume name.
        name: String,
        /// Path inside the container.
        target: String,
        /// Mounted read-only.
        read_only: bool,
    },
    /// A host path.
    Bind {
        /// Host path.
        source: String,
        /// Path inside the container.
        target: String,
        /// Mounted read-only.
        read_only: bool,
    },
    /// An anonymous volume at a path.
    Anonymous {
        /// Path inside the container.
        target: String,
    },
}

/// A container health check, durations in nanoseconds as the engine wants them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    /// Time between checks.
    pub interval_ns: Option<i64>,
    /// Time one check may take.
    pub timeout_ns: Option<i64>,
    /// Grace period after start.
    pub start_period_ns: Option<i64>,
    /// Failures before unhealthy.
    pub retries: Option<i64>,
}

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRequest {
    /// The tag to give the image.
    pub tag: String,
    /// Path of the Dockerfile inside the context tar.
    pub dockerfile: String,
    /// The build context as a tar archive.
    pub context_tar: Vec<u8>,
    /// Build arguments.
    pub build_args: BTreeMap<String, String>,
    /// Target stage.
    pub target: Option<String>,
    /// Target platform.
    pub platform: Option<String>,
    /// Labels for the image.
    pub labels: BTreeMap<String, String>,
    /// Which of the engine's builders runs it.
    pub builder: Builder,
}

/// The engine's image builder (`settings.builder` in marvin.yml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    /// BuildKit, through the build API's builder version 2 (the default).
    #[default]
    BuildKit,
    /// The legacy builder (builder version 1), for engines without BuildKit.
    Legacy,
}

impl Builder {
    /// The name marvin.yml uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Builder::BuildKit => "buildkit",
            Builder::Legacy => "legacy",
        }
    }
}

/// The state of a container as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Created but never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting after an exit.
    Restarting,
    /// Exited with a code.
    Exited {
        /// The exit code.
        code: i64,
    },
    /// Being removed, dead, or a state this version does not know.
    Other(String),
}

/// A container's health as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthState {
    /// Within the start period, or no check has passed yet.
    Starting,
    /// The last checks passed.
    Healthy,
    /// The check failed `retries` times.
    Unhealthy,
}

/// A container the engine has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedContainer {
    /// Container id.
    pub id: String,
    /// Name, without the leading `/`.
    pub name: String,
    /// The `io.marvin.service` label, or empty.
    pub service: String,
    /// All labels.
    pub labels: BTreeMap<String, String>,
    /// The image it was created from (as named at creation).
    pub image: String,
    /// Its state.
    pub state: ContainerState,
    /// Its health, when it has a check.
    pub health: Option<HealthState>,
    /// How often the engine restarted it.
    pub restart_count: i64,
}

impl ObservedContainer {
    /// The deploy key it was created with.
    pub fn deploy_key(&self) -> Option<&str> {
        self.labels.get(LABEL_DEPLOY_KEY).map(String::as_str)
    }
}

/// Something the engine could not do, in words a user understands.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine does not answer.
    #[error("cannot reach the Docker engine at {host}: {cause}")]
    Unreachable {
        /// Where we looked (socket path or `DOCKER_HOST`).
        host: String,
        /// Why it failed.
        cause: String,
    },
    /// An image build failed.
    #[error("building {tag} failed:\n{}", last_lines.join("\n"))]
    BuildFailed {
        /// The tag being built.
        tag: String,
        /// The last lines of the build log.
        last_lines: Vec<String>,
    },
    /// A container did not become running/healthy.
    #[error("container {container} did not come up ({state}):\n{}", last_lines.join("\n"))]
    NotReady {
        /// Container name.
        container: String,
        /// The state it ended in (`exited (1)`, `unhealthy`, `timed out after 60s starting`).
        state: String,
        /// The last lines of its log.
        last_lines: Vec<String>,
    },
    /// A required file or image is missing on this machine.
    #[error("{0}")]
    Missing(String),
    /// Any other refusal from the engine.
    #[error("Docker engine: {0}")]
    Api(String),
}

/// The container engine (ARCHITECTURE.md, `engine/`). One real implementation: bollard.
///
/// Log sinks are spelled `dyn for<'line> Fn(&'line str)`: with the elided
/// `Fn(&str)`, `async_trait` pins the `&str` to one lifetime and lines made
/// inside the method could not be passed. Implementations must spell it alike.
#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    /// Whether the engine answers.
    async fn ping(&self) -> Result<(), EngineError>;
    /// Build keys of the images present for a project (their `io.marvin.build-key` labels).
    async fn image_keys(&self, project: &str) -> Result<BTreeSet<String>, EngineError>;
    /// The id of an image of the project carrying this build key, if any.
    async fn image_with_key(&self, project: &str, key: &str)
    -> Result<Option<String>, EngineError>;
    /// Whether an image with this tag exists.
    async fn image_exists(&self, tag: &str) -> Result<bool, EngineError>;
    /// Give an existing image (by tag or id) another tag.
    async fn tag_image(&self, source: &str, tag: &str) -> Result<(), EngineError>;
    /// Build from a tar context; each output line goes to `log`. Returns the image id.
    async fn build_image(
        &self,
        req: BuildRequest,
        log: &(dyn for<'line> Fn(&'line str) + Send + Sync),
    ) -> Result<String, EngineError>;
    /// Remove an image by tag.
    async fn remove_image(&self, tag: &str) -> Result<(), EngineError>;
    /// Create a network if absent.
    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError>;
    /// Remove a network if present.
    async fn remove_network(&self, name: &str) -> Result<(), EngineError>;
    /// Create a named volume if absent.
    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError>;
    /// Containers carrying every given label, running or not.
    async fn list_containers(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ObservedContainer>, EngineError>;
    /// One container by name or id.
    async fn inspect_container(
        &self,
        name_or_id: &str,
    ) -> Result<Option<ObservedContainer>, EngineError>;
    /// Create and start a container; returns its id.
    async fn run_container(&self, spec: &ContainerSpec) -> Result<String, EngineError>;
    /// Stop a container (SIGTERM, then SIGKILL after the timeout).
    async fn stop_container(&self, id: &str, timeout_s: i64) -> Result<(), EngineError>;
    /// Start a stopped container.
    async fn start_container(&self, id: &str) -> Result<(), EngineError>;
    /// Rename a container.
    async fn rename_container(&self, id: &str, new_name: &str) -> Result<(), EngineError>;
    /// Remove a container (forced, with its anonymous volumes).
    async fn remove_container(&self, id: &str) -> Result<(), EngineError>;
    /// Wait until running (or healthy when it has a check), under a timeout.
    async fn wait_ready(&self, id: &str, timeout: Duration) -> Result<(), EngineError>;
    /// Run a one-off container to completion, streaming its output; returns the exit code. Removes it after.
    async fn run_to_completion(
        &self,
        spec: &ContainerSpec,
        log: &(dyn for<'line> Fn(&'line str) + Send + Sync),
    ) -> Result<i64, EngineError>;
    /// The last `tail` lines of a container's log.
    async fn logs(&self, id: &str, tail: usize) -> Result<Vec<String>, EngineError>;
    /// Remove everything carrying these labels: containers, networks, volumes, images.
    async fn remove_labelled(&self, labels: &BTreeMap<String, String>) -> Result<(), EngineError>;
    /// The same engine's Docker Swarm and registry side, if it has one.
    fn swarm(&self) -> Option<&dyn SwarmEngine> {
        None
    }
}
