//! The Docker Swarm side of the engine port (docs/swarm.md): services on an
//! overlay network, their tasks, and the registry the nodes pull from. The
//! port executes; what a service should be and what a rollout's state means
//! are decided in [`crate::swarm`]. Implemented for [`DockerEngine`] through
//! bollard's services, tasks, distribution and push/pull APIs.

use std::collections::{BTreeMap, HashMap};

use bollard::auth::DockerCredentials;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, HealthConfig, Limit, LocalNodeState, MountType, MountVolumeOptions,
    NetworkAttachmentConfig, NetworkCreateRequest, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    PushImageOptionsBuilder, UpdateServiceOptionsBuilder,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::docker::{is_status, label_filters, split_reference, to_hash_map};
use super::{DockerEngine, EngineError, LABEL_DEPLOY_KEY, LABEL_SERVICE, Mount};
use crate::swarm::{SwarmServiceSpec, UpdateOrder};

/// Environment variable: the registry user Marvin pushes and pulls as.
pub const REGISTRY_USERNAME_ENV: &str = "MARVIN_REGISTRY_USERNAME";
/// Environment variable: that user's password or token.
pub const REGISTRY_PASSWORD_ENV: &str = "MARVIN_REGISTRY_PASSWORD";

/// Credentials for a registry, from the process environment, never from marvin.yml.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry (`host:port`).
    pub server: String,
    /// The user.
    pub username: String,
    password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

impl RegistryAuth {
    /// Credentials for `server` given a user and password.
    pub fn new(server: &str, username: &str, password: &str) -> RegistryAuth {
        RegistryAuth {
            server: server.to_string(),
            username: username.to_string(),
            password: password.to_string(),
        }
    }

    /// Credentials from [`REGISTRY_USERNAME_ENV`] and [`REGISTRY_PASSWORD_ENV`]
    /// (None when neither is set: an open registry). One without the other is an error.
    pub fn from_env(server: &str) -> Result<Option<RegistryAuth>, EngineError> {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self::from_values(
            server,
            get(REGISTRY_USERNAME_ENV),
            get(REGISTRY_PASSWORD_ENV),
        )
    }

    /// [`RegistryAuth::from_env`] on given values.
    pub fn from_values(
        server: &str,
        username: Option<String>,
        password: Option<String>,
    ) -> Result<Option<RegistryAuth>, EngineError> {
        match (username, password) {
            (None, None) => Ok(None),
            (Some(u), Some(p)) => Ok(Some(RegistryAuth::new(server, &u, &p))),
            (Some(_), None) => Err(EngineError::Missing(format!(
                "{REGISTRY_USERNAME_ENV} is set but {REGISTRY_PASSWORD_ENV} is not; set both to log in to {server}, or neither for an open registry"
            ))),
            (None, Some(_)) => Err(EngineError::Missing(format!(
                "{REGISTRY_PASSWORD_ENV} is set but {REGISTRY_USERNAME_ENV} is not; set both to log in to {server}, or neither for an open registry"
            ))),
        }
    }

    /// The secret, for the redactor.
    pub fn password(&self) -> &str {
        &self.password
    }

    fn credentials(&self) -> DockerCredentials {
        DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(self.password.clone()),
            serveraddress: Some(self.server.clone()),
            ..Default::default()
        }
    }
}

fn credentials(auth: Option<&RegistryAuth>) -> Option<DockerCredentials> {
    auth.map(RegistryAuth::credentials)
}

/// A swarm service as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObservedSwarmService {
    /// Service id.
    pub id: String,
    /// Service name.
    pub name: String,
    /// The `io.marvin.service` label, or empty.
    pub service: String,
    /// The service's labels (with the deploy key).
    pub labels: BTreeMap<String, String>,
    /// The version index `update_service` must be given.
    pub version: u64,
    /// Replicas wanted (None: a global or job service).
    pub replicas: Option<u64>,
    /// Tasks running now, as the engine counts them.
    pub running: u64,
    /// The image of its task template.
    pub image: String,
    /// Swarm's update status: `updating`, `completed`, `rollback_completed`, ...
    pub update_state: Option<String>,
    /// When that update started (tells one update from the next).
    pub update_started: Option<String>,
    /// The update's message.
    pub update_message: Option<String>,
}

/// One task of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObservedTask {
    /// Task id.
    pub id: String,
    /// The replica slot it fills.
    pub slot: Option<i64>,
    /// Its state: `pending`, `starting`, `running`, `failed`, `shutdown`, ...
    pub state: String,
    /// Whether Swarm wants it running (old tasks are wanted shut down).
    pub desired_running: bool,
    /// The deploy key of the spec it runs (its container's label).
    pub deploy_key: Option<String>,
    /// Swarm's message for the state.
    pub message: String,
    /// The error that ended it, if one did.
    pub error: Option<String>,
    /// When the state was last set.
    pub timestamp: String,
}

impl ObservedTask {
    /// Whether it ended in failure.
    pub fn failed(&self) -> bool {
        matches!(self.state.as_str(), "failed" | "rejected")
    }

    /// Why it ended, in Swarm's words.
    pub fn reason(&self) -> String {
        self.error
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| format!("task {}: {}", self.state, self.message))
    }
}

/// What Marvin asks of a swarm and its registry. One real implementation:
/// [`DockerEngine`] talking to a manager node.
#[async_trait::async_trait]
pub trait SwarmEngine: Send + Sync {
    /// Ok when this engine is an active swarm manager; else what to do about it.
    async fn swarm_manager(&self) -> Result<(), EngineError>;
    /// Whether the registry holds this tag.
    async fn registry_has(
        &self,
        tag: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<bool, EngineError>;
    /// Push a local image to its registry; progress lines go to `log`.
    async fn push_image(
        &self,
        tag: &str,
        auth: Option<&RegistryAuth>,
        log: &(dyn for<'line> Fn(&'line str) + Send + Sync),
    ) -> Result<(), EngineError>;
    /// Pull an image from its registry.
    async fn pull_image(&self, tag: &str, auth: Option<&RegistryAuth>) -> Result<(), EngineError>;
    /// Create an attachable overlay network if absent.
    async fn ensure_overlay_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError>;
    /// Services carrying every given label.
    async fn list_services(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ObservedSwarmService>, EngineError>;
    /// One service by name or id.
    async fn inspect_service(
        &self,
        name: &str,
    ) -> Result<Option<ObservedSwarmService>, EngineError>;
    /// Create a service; returns its id.
    async fn create_service(
        &self,
        spec: &SwarmServiceSpec,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, EngineError>;
    /// Replace a service's spec; `version` is the index it was read at.
    async fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: &SwarmServiceSpec,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), EngineError>;
    /// A service's tasks, old and new.
    async fn service_tasks(&self, service_id: &str) -> Result<Vec<ObservedTask>, EngineError>;
    /// Remove a service (absent: fine).
    async fn remove_service(&self, name_or_id: &str) -> Result<(), EngineError>;
}

/// Swarm's restart condition for a compose `restart:` value.
fn restart_condition(value: Option<&str>) -> Option<TaskSpecRestartPolicyConditionEnum> {
    match value?.split(':').next()? {
        "no" => Some(TaskSpecRestartPolicyConditionEnum::NONE),
        "on-failure" => Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE),
        "always" | "unless-stopped" => Some(TaskSpecRestartPolicyConditionEnum::ANY),
        _ => None,
    }
}

/// The bollard service spec of a [`SwarmServiceSpec`]: the container of the
/// single engine as a task template, replicated, with a rolling update that
/// rolls back on failure.
pub fn bollard_spec(spec: &SwarmServiceSpec) -> ServiceSpec {
    let c = &spec.container;
    let labels = to_hash_map(&c.labels);
    let volume_labels: HashMap<String, String> = c
        .labels
        .iter()
        .filter(|(k, _)| [super::LABEL_PROJECT, super::LABEL_ENV].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mounts: Vec<bollard::models::Mount> = c
        .volumes
        .iter()
        .map(|m| match m {
            Mount::Named {
                name,
                target,
                read_only,
            } => bollard::models::Mount {
                typ: Some(MountType::VOLUME),
                source: Some(name.clone()),
                target: Some(target.clone()),
                read_only: Some(*read_only),
                volume_options: Some(MountVolumeOptions {
                    labels: Some(volume_labels.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Mount::Bind {
                source,
                target,
                read_only,
            } => bollard::models::Mount {
                typ: Some(MountType::BIND),
                source: Some(source.clone()),
                target: Some(target.clone()),
                read_only: Some(*read_only),
                ..Default::default()
            },
            Mount::Anonymous { target } => bollard::models::Mount {
                typ: Some(MountType::VOLUME),
                target: Some(target.clone()),
                ..Default::default()
            },
        })
        .collect();
    let ports: Vec<EndpointPortConfig> = c
        .ports
        .iter()
        .map(|p| EndpointPortConfig {
            protocol: Some(if p.protocol == "udp" {
                EndpointPortConfigProtocolEnum::UDP
            } else {
                EndpointPortConfigProtocolEnum::TCP
            }),
            target_port: Some(i64::from(p.container_port)),
            published_port: p.host_port.map(i64::from),
            publish_mode: Some(EndpointPortConfigPublishModeEnum::INGRESS),
            ..Default::default()
        })
        .collect();
    let order = match spec.update.order {
        UpdateOrder::StartFirst => ServiceSpecUpdateConfigOrderEnum::START_FIRST,
        UpdateOrder::StopFirst => ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
    };
    let rollback_order = match spec.update.order {
        UpdateOrder::StartFirst => ServiceSpecRollbackConfigOrderEnum::START_FIRST,
        UpdateOrder::StopFirst => ServiceSpecRollbackConfigOrderEnum::STOP_FIRST,
    };
    let limits = (c.nano_cpus.is_some() || c.memory_bytes.is_some()).then(|| Limit {
        nano_cpus: c.nano_cpus,
        memory_bytes: c.memory_bytes,
        ..Default::default()
    });
    ServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(c.image.clone()),
                labels: Some(labels),
                // Compose `entrypoint` is the container's command, `command` its args.
                command: c.entrypoint.clone(),
                args: c.command.clone(),
                env: Some(c.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                dir: c.working_dir.clone(),
                user: c.user.clone(),
                mounts: (!mounts.is_empty()).then_some(mounts),
                health_check: c.healthcheck.as_ref().map(|h| HealthConfig {
                    test: Some(h.test.clone()),
                    interval: h.interval_ns,
                    timeout: h.timeout_ns,
                    start_period: h.start_period_ns,
                    retries: h.retries,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            resources: limits.map(|l| TaskSpecResources {
                limits: Some(l),
                ..Default::default()
            }),
            restart_policy: restart_condition(c.restart.as_deref()).map(|condition| {
                TaskSpecRestartPolicy {
                    condition: Some(condition),
                    ..Default::default()
                }
            }),
            networks: (!c.network.is_empty()).then(|| {
                vec![NetworkAttachmentConfig {
                    target: Some(c.network.clone()),
                    aliases: (!c.aliases.is_empty()).then(|| c.aliases.clone()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(spec.replicas as i64),
            }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(spec.update.parallelism),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(spec.update.monitor_ns),
            max_failure_ratio: Some(0.0),
            order: Some(order),
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(spec.update.parallelism),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(spec.update.monitor_ns),
            max_failure_ratio: Some(0.0),
            order: Some(rollback_order),
        }),
        endpoint_spec: (!ports.is_empty()).then(|| EndpointSpec {
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn observed_service(s: bollard::models::Service) -> ObservedSwarmService {
    let spec = s.spec.unwrap_or_default();
    let labels: BTreeMap<String, String> = spec.labels.unwrap_or_default().into_iter().collect();
    let update = s.update_status.unwrap_or_default();
    ObservedSwarmService {
        id: s.id.unwrap_or_default(),
        name: spec.name.unwrap_or_default(),
        service: labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
        labels,
        version: s.version.and_then(|v| v.index).unwrap_or_default(),
        replicas: spec
            .mode
            .and_then(|m| m.replicated)
            .and_then(|r| r.replicas)
            .map(|r| r.max(0) as u64),
        running: s
            .service_status
            .and_then(|st| st.running_tasks)
            .unwrap_or_default(),
        image: spec
            .task_template
            .and_then(|t| t.container_spec)
            .and_then(|c| c.image)
            .unwrap_or_default(),
        update_state: update.state.map(|st| st.to_string()),
        update_started: update.started_at.map(|t| t.to_string()),
        update_message: update.message,
    }
}

fn observed_task(t: bollard::models::Task) -> ObservedTask {
    let status = t.status.unwrap_or_default();
    ObservedTask {
        id: t.id.unwrap_or_default(),
        slot: t.slot,
        state: status.state.map(|s| s.to_string()).unwrap_or_default(),
        desired_running: t.desired_state == Some(TaskState::RUNNING),
        deploy_key: t
            .spec
            .and_then(|s| s.container_spec)
            .and_then(|c| c.labels)
            .and_then(|l| l.get(LABEL_DEPLOY_KEY).cloned()),
        message: status.message.unwrap_or_default(),
        error: status.err,
        timestamp: status.timestamp.map(|t| t.to_string()).unwrap_or_default(),
    }
}

#[async_trait::async_trait]
impl SwarmEngine for DockerEngine {
    async fn swarm_manager(&self) -> Result<(), EngineError> {
        let docker = self.api().await?;
        let info = docker
            .info()
            .await
            .map_err(|e| self.fail("reading the engine's swarm state", e))?;
        let swarm = info.swarm.unwrap_or_default();
        match (swarm.local_node_state, swarm.control_available) {
            (Some(LocalNodeState::ACTIVE), Some(true)) => Ok(()),
            (Some(LocalNodeState::ACTIVE), _) => Err(EngineError::Missing(format!(
                "the Docker engine at {} is a swarm worker, not a manager; point DOCKER_HOST at a manager node",
                self.host()
            ))),
            (state, _) => Err(EngineError::Missing(format!(
                "the Docker engine at {} is not in a swarm (state: {}); run `docker swarm init` there or point DOCKER_HOST at a swarm manager",
                self.host(),
                state
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into())
            ))),
        }
    }

    async fn registry_has(
        &self,
        tag: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<bool, EngineError> {
        let docker = self.api().await?;
        match docker.inspect_registry_image(tag, credentials(auth)).await {
            Ok(_) => Ok(true),
            // The engine answers 401/403/404 or a 500 "manifest unknown" for absent tags.
            Err(e) if is_status(&e, 404) || is_status(&e, 401) || is_status(&e, 403) => Ok(false),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                if message.contains("manifest unknown")
                    || message.contains("not found")
                    || message.contains("no such") =>
            {
                Ok(false)
            }
            Err(e) => Err(self.fail(&format!("looking up {tag} in its registry"), e)),
        }
    }

    async fn push_image(
        &self,
        tag: &str,
        auth: Option<&RegistryAuth>,
        log: &(dyn for<'line> Fn(&'line str) + Send + Sync),
    ) -> Result<(), EngineError> {
        let docker = self.api().await?;
        let (repo, version) = split_reference(tag);
        let doing = format!("pushing {tag}");
        let options = PushImageOptionsBuilder::new().tag(version).build();
        let mut stream = docker.push_image(repo, Some(options), credentials(auth));
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| self.fail(&doing, e))?;
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Api(format!(
                    "{doing}: {}",
                    detail.message.unwrap_or_default()
                )));
            }
            // Progress bars are noise in a job log; the layer verdicts are not.
            if let Some(status) = info.status
                && info.progress_detail.is_none_or(|p| p.total.is_none())
            {
                log(&status);
            }
        }
        Ok(())
    }

    async fn pull_image(&self, tag: &str, auth: Option<&RegistryAuth>) -> Result<(), EngineError> {
        let docker = self.api().await?;
        let (repo, version) = split_reference(tag);
        let doing = format!("pulling {tag}");
        let options = CreateImageOptionsBuilder::new()
            .from_image(repo)
            .tag(version)
            .build();
        let mut stream = docker.create_image(Some(options), None, credentials(auth));
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| self.fail(&doing, e))?;
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Api(format!(
                    "{doing}: {}",
                    detail.message.unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    async fn ensure_overlay_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let docker = self.api().await?;
        let doing = format!("creating overlay network {name}");
        match docker.inspect_network(name, None).await {
            Ok(n) if n.driver.as_deref() == Some("overlay") => return Ok(()),
            Ok(n) => {
                return Err(EngineError::Api(format!(
                    "{doing}: a {} network of that name exists (made when this environment ran on the single engine?); remove it with `docker network rm {name}` and deploy again",
                    n.driver.unwrap_or_default()
                )));
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(self.fail(&doing, e)),
        }
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("overlay".to_string()),
            // One-off task containers (hooks, `run`) join it from the manager.
            attachable: Some(true),
            labels: Some(to_hash_map(labels)),
            ..Default::default()
        };
        match docker.create_network(request).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(self.fail(&doing, e)),
        }
    }

    async fn list_services(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ObservedSwarmService>, EngineError> {
        let docker = self.api().await?;
        let options = ListServicesOptionsBuilder::new()
            .filters(&label_filters(labels))
            .status(true)
            .build();
        let services = docker
            .list_services(Some(options))
            .await
            .map_err(|e| self.fail("listing swarm services", e))?;
        Ok(services.into_iter().map(observed_service).collect())
    }

    async fn inspect_service(
        &self,
        name: &str,
    ) -> Result<Option<ObservedSwarmService>, EngineError> {
        let docker = self.api().await?;
        // Inspect has no running count; the list (filtered by name, exact match below) has.
        let options = ListServicesOptionsBuilder::new()
            .filters(&HashMap::from([(
                "name".to_string(),
                vec![name.to_string()],
            )]))
            .status(true)
            .build();
        let services = docker
            .list_services(Some(options))
            .await
            .map_err(|e| self.fail(&format!("inspecting service {name}"), e))?;
        Ok(services
            .into_iter()
            .map(observed_service)
            .find(|s| s.name == name || s.id == name))
    }

    async fn create_service(
        &self,
        spec: &SwarmServiceSpec,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, EngineError> {
        let docker = self.api().await?;
        let response = docker
            .create_service(bollard_spec(spec), credentials(auth))
            .await
            .map_err(|e| self.fail(&format!("creating service {}", spec.name), e))?;
        Ok(response.id.unwrap_or_default())
    }

    async fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: &SwarmServiceSpec,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), EngineError> {
        let docker = self.api().await?;
        let options = UpdateServiceOptionsBuilder::new()
            .version(version as i32)
            .registry_auth_from("spec")
            .build();
        docker
            .update_service(id, bollard_spec(spec), options, credentials(auth))
            .await
            .map(|_| ())
            .map_err(|e| self.fail(&format!("updating service {}", spec.name), e))
    }

    async fn service_tasks(&self, service_id: &str) -> Result<Vec<ObservedTask>, EngineError> {
        let docker = self.api().await?;
        let options = ListTasksOptionsBuilder::new()
            .filters(&HashMap::from([(
                "service".to_string(),
                vec![service_id.to_string()],
            )]))
            .build();
        let tasks = docker
            .list_tasks(Some(options))
            .await
            .map_err(|e| self.fail(&format!("listing the tasks of service {service_id}"), e))?;
        Ok(tasks.into_iter().map(observed_task).collect())
    }

    async fn remove_service(&self, name_or_id: &str) -> Result<(), EngineError> {
        let docker = self.api().await?;
        match docker.delete_service(name_or_id).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(self.fail(&format!("removing service {name_or_id}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ContainerSpec, Health, PortBinding};
    use crate::swarm::UpdatePolicy;

    fn spec() -> SwarmServiceSpec {
        SwarmServiceSpec {
            service: "api".into(),
            name: "shop-prod-api".into(),
            replicas: 3,
            container: ContainerSpec {
                name: "shop-prod-api".into(),
                image: "127.0.0.1:5000/marvin/shop-api:0123".into(),
                command: Some(vec!["httpd".into(), "-f".into()]),
                env: vec![("A".into(), "1".into())],
                labels: BTreeMap::from([
                    (super::super::LABEL_PROJECT.to_string(), "shop".to_string()),
                    (super::super::LABEL_ENV.to_string(), "prod".to_string()),
                    (LABEL_DEPLOY_KEY.to_string(), "k1".to_string()),
                ]),
                network: "marvin-shop-prod".into(),
                aliases: vec!["api".into(), "backend".into()],
                ports: vec![PortBinding {
                    host_ip: None,
                    host_port: Some(8080),
                    container_port: 80,
                    protocol: "tcp".into(),
                }],
                volumes: vec![Mount::Named {
                    name: "shop-prod-data".into(),
                    target: "/data".into(),
                    read_only: false,
                }],
                healthcheck: Some(Health {
                    test: vec!["CMD".into(), "true".into()],
                    interval_ns: Some(1_000_000_000),
                    timeout_ns: None,
                    start_period_ns: None,
                    retries: Some(3),
                }),
                restart: Some("unless-stopped".into()),
                nano_cpus: Some(500_000_000),
                replicas: Some(3),
                ..Default::default()
            },
            update: UpdatePolicy {
                order: UpdateOrder::StopFirst,
                monitor_ns: 2_000_000_000,
                parallelism: 1,
            },
        }
    }

    #[test]
    fn a_service_spec_carries_replicas_labels_network_and_a_rollback_on_failure() {
        let s = bollard_spec(&spec());
        assert_eq!(s.name.as_deref(), Some("shop-prod-api"));
        assert_eq!(
            s.mode.and_then(|m| m.replicated).and_then(|r| r.replicas),
            Some(3)
        );
        assert_eq!(
            s.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_DEPLOY_KEY))
                .map(String::as_str),
            Some("k1")
        );
        let update = s.update_config.expect("an update config");
        assert_eq!(
            update.failure_action,
            Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK)
        );
        assert_eq!(update.monitor, Some(2_000_000_000));
        assert_eq!(
            update.order,
            Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST)
        );
        let task = s.task_template.expect("a task template");
        let net = &task.networks.expect("a network")[0];
        assert_eq!(net.target.as_deref(), Some("marvin-shop-prod"));
        assert_eq!(
            net.aliases.as_deref(),
            Some(&["api".to_string(), "backend".to_string()][..])
        );
        let c = task.container_spec.expect("a container spec");
        assert_eq!(
            c.args.as_deref(),
            Some(&["httpd".to_string(), "-f".to_string()][..])
        );
        assert_eq!(c.command, None);
        assert_eq!(c.env.as_deref(), Some(&["A=1".to_string()][..]));
        assert_eq!(
            c.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_DEPLOY_KEY))
                .map(String::as_str),
            Some("k1"),
            "tasks carry the deploy key, so a rollout can tell new tasks from old"
        );
        let mount = &c.mounts.expect("mounts")[0];
        assert_eq!(
            (mount.typ, mount.source.as_deref()),
            (Some(MountType::VOLUME), Some("shop-prod-data"))
        );
        assert_eq!(c.health_check.and_then(|h| h.interval), Some(1_000_000_000));
        assert_eq!(
            task.restart_policy.and_then(|r| r.condition),
            Some(TaskSpecRestartPolicyConditionEnum::ANY)
        );
        assert_eq!(
            task.resources
                .and_then(|r| r.limits)
                .and_then(|l| l.nano_cpus),
            Some(500_000_000)
        );
        let port = &s.endpoint_spec.and_then(|e| e.ports).expect("ports")[0];
        assert_eq!(
            (port.target_port, port.published_port),
            (Some(80), Some(8080))
        );
    }

    #[test]
    fn registry_credentials_need_both_halves_and_never_show_the_password() {
        assert_eq!(
            RegistryAuth::from_values("r:5000", None, None).unwrap(),
            None
        );
        let auth = RegistryAuth::from_values("r:5000", Some("ci".into()), Some("s3cret".into()))
            .unwrap()
            .expect("credentials");
        assert!(!format!("{auth:?}").contains("s3cret"));
        assert_eq!(auth.credentials().serveraddress.as_deref(), Some("r:5000"));
        let e = RegistryAuth::from_values("r:5000", Some("ci".into()), None).unwrap_err();
        assert!(
            e.to_string().contains("MARVIN_REGISTRY_PASSWORD is not"),
            "{e}"
        );
    }

    #[test]
    fn restart_values_map_to_swarm_conditions() {
        assert_eq!(
            restart_condition(Some("no")),
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        assert_eq!(
            restart_condition(Some("on-failure:3")),
            Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE)
        );
        assert_eq!(restart_condition(None), None);
    }
}
