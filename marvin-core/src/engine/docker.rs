//! [`Engine`] on a Docker engine, through bollard.
//!
//! The client speaks the newest API bollard knows; the first call negotiates
//! down to the engine's version (older engines refuse newer clients).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, DeviceMapping,
    EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig, HostConfigLogConfig,
    NetworkCreateRequest, NetworkingConfig, PortBinding as DockerPortBinding, ResourcesUlimits,
    RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
    TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use super::{
    BuildRequest, Builder, ContainerSpec, ContainerState, Engine, EngineError, HealthState,
    LABEL_BUILD_KEY, LABEL_PROJECT, LABEL_SERVICE, Mount, ObservedContainer,
};

/// How many log lines an error carries.
const LAST_LINES: usize = 20;
/// Bollard's per-request timeout (time to the response headers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Where Docker listens when `DOCKER_HOST` is unset (bollard's default, which it does not export).
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// How often `wait_ready` looks at the container.
const POLL: Duration = Duration::from_millis(250);

/// The local (or `DOCKER_HOST`) Docker engine.
pub struct DockerEngine {
    docker: Docker,
    host: String,
    negotiated: OnceCell<()>,
}

impl DockerEngine {
    /// A client for `DOCKER_HOST`, or the local socket when it is unset. Nothing is sent yet.
    pub fn connect() -> Result<Self, EngineError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Self::connect_to(&host)
    }

    /// A client for one engine: `unix:///path`, `tcp://host:port` or `http://host:port`. Nothing is sent yet.
    pub fn connect_to(host: &str) -> Result<Self, EngineError> {
        let docker = Docker::connect_with_host(host).map_err(|e| EngineError::Unreachable {
            host: host.to_string(),
            cause: error_chain(&e),
        })?;
        Ok(Self {
            docker,
            host: host.to_string(),
            negotiated: OnceCell::new(),
        })
    }

    /// Where this client talks to (socket path or URL).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The client, once the API version is agreed with the engine.
    pub(super) async fn api(&self) -> Result<&Docker, EngineError> {
        self.negotiated
            .get_or_try_init(|| async {
                // The clone shares its version with `self.docker`, so negotiating it sets ours.
                self.docker
                    .clone()
                    .negotiate_version()
                    .await
                    .map(|_| ())
                    .map_err(|e| EngineError::Unreachable {
                        host: self.host.clone(),
                        cause: error_chain(&e),
                    })
            })
            .await?;
        Ok(&self.docker)
    }

    /// Turn a bollard error into one a user understands; `doing` says what we were at.
    pub(super) fn fail(&self, doing: &str, e: BollardError) -> EngineError {
        match e {
            BollardError::DockerResponseServerError { message, .. } => {
                EngineError::Api(format!("{doing}: {}", message.trim()))
            }
            BollardError::RequestTimeoutError => EngineError::Unreachable {
                host: self.host.clone(),
                cause: format!("{doing}: no answer within {}s", REQUEST_TIMEOUT.as_secs()),
            },
            e if is_connection_error(&e) => EngineError::Unreachable {
                host: self.host.clone(),
                cause: format!("{doing}: {}", error_chain(&e)),
            },
            e => EngineError::Api(format!("{doing}: {}", error_chain(&e))),
        }
    }

    /// `docker import`: make an image from a root filesystem tar. Returns the image id.
    pub(crate) async fn import_rootfs(
        &self,
        rootfs_tar: Vec<u8>,
        reference: &str,
        changes: Vec<String>,
    ) -> Result<String, EngineError> {
        let docker = self.api().await?;
        let (repo, tag) = split_reference(reference);
        let options = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(changes)
            .build();
        let doing = format!("importing image {reference}");
        let mut stream = docker.create_image(
            Some(options),
            Some(bollard::body_full(rootfs_tar.into())),
            None,
        );
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| self.fail(&doing, e))?;
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Api(format!(
                    "{doing}: {}",
                    detail.message.unwrap_or_default()
                )));
            }
        }
        self.image_id(reference).await
    }

    /// The id of an image by tag.
    pub(super) async fn image_id(&self, reference: &str) -> Result<String, EngineError> {
        let docker = self.api().await?;
        let doing = format!("inspecting image {reference}");
        let image = docker
            .inspect_image(reference)
            .await
            .map_err(|e| self.fail(&doing, e))?;
        image
            .id
            .ok_or_else(|| EngineError::Api(format!("{doing}: the engine gave no id")))
    }

    /// All log lines of a container (or the last `tail`), following it until it stops when `follow`.
    async fn read_logs(
        &self,
        id: &str,
        tail: Option<usize>,
        follow: bool,
        log: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), EngineError> {
        let docker = self.api().await?;
        let tail = tail.map_or_else(|| "all".to_string(), |n| n.to_string());
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(follow)
            .tail(&tail)
            .build();
        let doing = format!("reading the log of container {id}");
        let mut lines = LineSplitter::default();
        let mut stream = docker.logs(id, Some(options));
        while let Some(item) = stream.next().await {
            let output = item.map_err(|e| self.fail(&doing, e))?;
            lines.feed(&output.into_bytes(), log);
        }
        lines.finish(log);
        Ok(())
    }

    /// Removes one container; absent is fine.
    async fn force_remove_container(&self, id: &str) -> Result<(), EngineError> {
        let docker = self.api().await?;
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(self.fail(&format!("removing container {id}"), e)),
        }
    }

    async fn run_once(
        &self,
        id: &str,
        name: &str,
        log: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<i64, EngineError> {
        let docker = self.api().await?;
        docker
            .start_container(id, None)
            .await
            .map_err(|e| self.fail(&format!("starting container {name}"), e))?;
        self.read_logs(id, None, true, log).await?;
        let doing = format!("waiting for container {name} to finish");
        match docker.wait_container(id, None).next().await {
            Some(Ok(response)) => Ok(response.status_code),
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(self.fail(&doing, e)),
            None => Err(EngineError::Api(format!(
                "{doing}: the engine gave no exit code"
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Engine for DockerEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        let docker = self.api().await?;
        docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| self.fail("ping", e))
    }

    async fn image_keys(&self, project: &str) -> Result<BTreeSet<String>, EngineError> {
        let docker = self.api().await?;
        let filters = label_filters(&BTreeMap::from([(
            LABEL_PROJECT.to_string(),
            project.to_string(),
        )]));
        let options = ListImagesOptionsBuilder::new().filters(&filters).build();
        let images = docker
            .list_images(Some(options))
            .await
            .map_err(|e| self.fail(&format!("listing images of project {project}"), e))?;
        Ok(images
            .into_iter()
            .filter_map(|image| image.labels.get(LABEL_BUILD_KEY).cloned())
            .collect())
    }

    async fn image_with_key(
        &self,
        project: &str,
        key: &str,
    ) -> Result<Option<String>, EngineError> {
        let docker = self.api().await?;
        let filters = label_filters(&BTreeMap::from([
            (LABEL_PROJECT.to_string(), project.to_string()),
            (LABEL_BUILD_KEY.to_string(), key.to_string()),
        ]));
        let options = ListImagesOptionsBuilder::new().filters(&filters).build();
        let images = docker
            .list_images(Some(options))
            .await
            .map_err(|e| self.fail(&format!("looking up the image with key {key}"), e))?;
        Ok(images.into_iter().next().map(|image| image.id))
    }

    async fn image_exists(&self, tag: &str) -> Result<bool, EngineError> {
        let docker = self.api().await?;
        match docker.inspect_image(tag).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(self.fail(&format!("inspecting image {tag}"), e)),
        }
    }

    async fn tag_image(&self, source: &str, tag: &str) -> Result<(), EngineError> {
        let docker = self.api().await?;
        let (repo, version) = split_reference(tag);
        let options = TagImageOptionsBuilder::new()
            .repo(repo)
            .tag(version)
            .build();
        docker
            .tag_image(source, Some(options))
            .await
            .map_err(|e| self.fail(&format!("tagging image {source} as {tag}"), e))
    }

    async fn build_image(
        &self,
        req: BuildRequest,
        log: &(dyn for<'line> Fn(&'line str) + Send + Sync),
    ) -> Result<String, EngineError> {
        if req.builder == Builder::BuildKit {
            return self.build_with_buildkit(req, log).await;
        }
        let docker = self.api().await?;
        let build_args: HashMap<&str, &str> = req
            .build_args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let labels: HashMap<&str, &str> = req
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut options = BuildImageOptionsBuilder::default()
            .dockerfile(&req.dockerfile)
            .t(&req.tag)
            .rm(true)
            .forcerm(true)
            .buildargs(&build_args)
            .labels(&labels);
        if let Some(target) = &req.target {
            options = options.target(target);
        }
        if let Some(platform) = &req.platform {
            options = options.platform(platform);
        }
        let tail = std::sync::Mutex::new(LastLines::default());
        let emit = |line: &str| {
            log(line);
            tail.lock()
                .expect("log tail lock is never poisoned")
                .push(line);
        };
        let mut lines = LineSplitter::default();
        let mut failure = None;
        let mut stream = docker.build_image(
            options.build(),
            None,
            Some(bollard::body_full(req.context_tar.into())),
        );
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream {
                        lines.feed(text.as_bytes(), &emit);
                    }
                    if let Some(status) = info.status {
                        lines.feed(status.as_bytes(), &emit);
                        lines.feed(b"\n", &emit);
                    }
                    if let Some(detail) = info.error_detail {
                        failure = Some(detail.message.unwrap_or_default());
                        break;
                    }
                }
                Err(BollardError::DockerStreamError { error }) => {
                    failure = Some(error);
                    break;
                }
                Err(BollardError::DockerResponseServerError { message, .. }) => {
                    failure = Some(message);
                    break;
                }
                Err(e) => return Err(self.fail(&format!("building {}", req.tag), e)),
            }
        }
        lines.finish(&emit);
        drop(stream);
        if let Some(error) = failure {
            let mut last_lines = tail
                .into_inner()
                .expect("log tail lock is never poisoned")
                .into_vec();
            let error = error.trim().to_string();
            if !error.is_empty() && last_lines.last() != Some(&error) {
                last_lines.push(error);
            }
            return Err(EngineError::BuildFailed {
                tag: req.tag,
                last_lines,
            });
        }
        self.image_id(&req.tag).await
    }

    async fn remove_image(&self, tag: &str) -> Result<(), EngineError> {
        let docker = self.api().await?;
        match docker
            .remove_image(
                tag,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(self.fail(&format!("removing image {tag}"), e)),
        }
    }

    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let docker = self.api().await?;
        let doing = format!("creating network {name}");
        match docker.inspect_network(name, None).await {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(self.fail(&doing, e)),
        }
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".to_string()),
            labels: Some(to_hash_map(labels)),
            ..Default::default()
        };
        match docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Someone else created it between our look and our create.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(self.fail(&doing, e)),
        }
    }

    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        let docker = self.api().await?;
        match docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(self.fail(&format!("removing network {name}"), e)),
        }
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        let docker = self.api().await?;
        let doing = format!("creating volume {name}");
        match docker.inspect_volume(name).await {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(self.fail(&doing, e)),
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(to_hash_map(labels)),
            ..Default::default()
        };
        docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|e| self.fail(&doing, e))
    }

    async fn list_containers(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ObservedContainer>, EngineError> {
        // Ids from the summaries; the full state from inspecting each (the
        // summary lacks exit codes and restart counts). Either answer may
        // carry something bollard cannot read (a port type `0` left by
        // another tool or an older Marvin): then the raw summary stands in,
        // so one odd container never breaks `plan` for everyone.
        let docker = self.api().await?;
        let filters = label_filters(labels);
        let (ids, mut raw) = match docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
        {
            Ok(summaries) => (summaries.into_iter().filter_map(|s| s.id).collect(), None),
            Err(e) if is_unreadable(&e) => {
                let raw = self.raw_container_list(&filters).await?;
                let ids: Vec<String> = raw.iter().filter_map(summary_id).collect();
                (ids, Some(raw))
            }
            Err(e) => return Err(self.fail("listing containers", e)),
        };
        let mut observed = Vec::with_capacity(ids.len());
        for id in ids {
            match docker.inspect_container(&id, None).await {
                Ok(response) => observed.push(self::observed(response)),
                Err(e) if is_status(&e, 404) => {}
                Err(e) if is_unreadable(&e) => {
                    if raw.is_none() {
                        raw = Some(self.raw_container_list(&filters).await?);
                    }
                    let summary = raw
                        .iter()
                        .flatten()
                        .find(|s| summary_id(s).as_deref() == Some(id.as_str()));
                    match summary.map(observed_from_summary) {
                        Some(container) => observed.push(container),
                        None => return Err(self.fail(&format!("inspecting container {id}"), e)),
                    }
                }
                Err(e) => return Err(self.fail(&format!("inspecting container {id}"), e)),
            }
        }
        observed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(observed)
    }

    async fn inspect_container(
        &self,
        name_or_id: &str,
    ) -> Result<Option<ObservedContainer>, EngineError> {
        let docker = self.api().await?;
        match docker.inspect_container(name_or_id, None).await {
            Ok(response) => Ok(Some(observed(response))),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(self.fail(&format!("inspecting container {name_or_id}"), e)),
        }
    }

    async fn run_container(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        let docker = self.api().await?;
        let body = create_body(spec)?;
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.fail(&format!("creating container {}", spec.name), e))?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            let error = self.fail(&format!("starting container {}", spec.name), e);
            // A container that never started would only block its name; the start error is what matters.
            let _ = self.force_remove_container(&created.id).await;
            return Err(error);
        }
        Ok(created.id)
    }

    async fn stop_container(&self, id: &str, timeout_s: i64) -> Result<(), EngineError> {
        let docker = self.api().await?;
        let grace = i32::try_from(timeout_s.max(0)).unwrap_or(i32::MAX);
        // The engine answers only once the container is down: allow for the grace period.
        let docker = docker
            .clone()
            .with_timeout(REQUEST_TIMEOUT + Duration::from_secs(u64::try_from(grace).unwrap_or(0)));
        let options = StopContainerOptionsBuilder::new().t(grace).build();
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 304) => Ok(()),
            Err(e) => Err(self.fail(&format!("stopping container {id}"), e)),
        }
    }

    async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        let docker = self.api().await?;
        match docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 304) => Ok(()),
            Err(e) => Err(self.fail(&format!("starting container {id}"), e)),
        }
    }

    async fn rename_container(&self, id: &str, new_name: &str) -> Result<(), EngineError> {
        let docker = self.api().await?;
        let options = RenameContainerOptionsBuilder::new().name(new_name).build();
        docker
            .rename_container(id, options)
            .await
            .map_err(|e| self.fail(&format!("renaming container {id} to {new_name}"), e))
    }

    async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        self.force_remove_container(id).await
    }

    async fn wait_ready(&self, id: &str, timeout: Duration) -> Result<(), EngineError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut running_before = false;
        loop {
            let container =
                self.inspect_container(id)
                    .await?
                    .ok_or_else(|| EngineError::NotReady {
                        container: id.to_string(),
                        state: "removed".to_string(),
                        last_lines: Vec::new(),
                    })?;
            let verdict = readiness(&container, running_before);
            match verdict {
                Readiness::Ready => return Ok(()),
                Readiness::Failed(state) => return Err(self.not_ready(&container, state).await),
                Readiness::Waiting { running } => running_before = running,
            }
            if tokio::time::Instant::now() >= deadline {
                let state = format!(
                    "timed out after {}s, {}",
                    timeout.as_secs_f64(),
                    describe(&container)
                );
                return Err(self.not_ready(&container, state).await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn run_to_completion(
        &self,
        spec: &ContainerSpec,
        log: &(dyn for<'line> Fn(&'line str) + Send + Sync),
    ) -> Result<i64, EngineError> {
        let docker = self.api().await?;
        let mut body = create_body(spec)?;
        // A one-off runs once: a restart policy would keep it from ever completing.
        if let Some(host) = body.host_config.as_mut() {
            host.restart_policy = None;
        }
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.fail(&format!("creating container {}", spec.name), e))?;
        let outcome = self.run_once(&created.id, &spec.name, log).await;
        let removed = self.force_remove_container(&created.id).await;
        let code = outcome?;
        removed?;
        Ok(code)
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<Vec<String>, EngineError> {
        let lines = std::sync::Mutex::new(Vec::new());
        self.read_logs(id, Some(tail), false, &|line| {
            lines
                .lock()
                .expect("log lines lock is never poisoned")
                .push(line.to_string());
        })
        .await?;
        let mut lines = lines
            .into_inner()
            .expect("log lines lock is never poisoned");
        // A partial last line can make one more than asked for.
        let extra = lines.len().saturating_sub(tail);
        lines.drain(..extra);
        Ok(lines)
    }

    fn swarm(&self) -> Option<&dyn super::SwarmEngine> {
        Some(self)
    }

    async fn remove_labelled(&self, labels: &BTreeMap<String, String>) -> Result<(), EngineError> {
        if labels.is_empty() {
            return Err(EngineError::Api(
                "refusing to remove everything on the engine: no labels given".to_string(),
            ));
        }
        let docker = self.api().await?;
        let filters = label_filters(labels);
        let described = describe_labels(labels);

        let containers: Vec<String> = match docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
        {
            Ok(containers) => containers.into_iter().filter_map(|c| c.id).collect(),
            Err(e) if is_unreadable(&e) => self
                .raw_container_list(&filters)
                .await?
                .iter()
                .filter_map(summary_id)
                .collect(),
            Err(e) => return Err(self.fail(&format!("listing containers with {described}"), e)),
        };
        for id in containers {
            self.force_remove_container(&id).await?;
        }

        let networks = docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(|e| self.fail(&format!("listing networks with {described}"), e))?;
        for network in networks {
            if let Some(id) = network.id {
                self.remove_network(&id).await?;
            }
        }

        let volumes = docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(|e| self.fail(&format!("listing volumes with {described}"), e))?;
        for volume in volumes.volumes.unwrap_or_default() {
            match docker
                .remove_volume(
                    &volume.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
            {
                Ok(()) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(self.fail(&format!("removing volume {}", volume.name), e)),
            }
        }

        // Children before parents: newest first, and another round for any parent
        // whose children were only removed after it was tried.
        let mut images = docker
            .list_images(Some(
                ListImagesOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(|e| self.fail(&format!("listing images with {described}"), e))?;
        images.sort_by_key(|image| std::cmp::Reverse(image.created));
        let mut pending: Vec<String> = images.into_iter().map(|i| i.id).collect();
        for round in 0..3 {
            let mut conflicts = Vec::new();
            for id in pending {
                let options = RemoveImageOptionsBuilder::new().force(true).build();
                match docker.remove_image(&id, Some(options), None).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) if is_status(&e, 409) && round < 2 => conflicts.push(id),
                    Err(e) => return Err(self.fail(&format!("removing image {id}"), e)),
                }
            }
            pending = conflicts;
            if pending.is_empty() {
                break;
            }
        }
        Ok(())
    }
}

impl DockerEngine {
    /// `GET /containers/json` read as plain JSON, for when bollard's typed
    /// summaries cannot be read (a field value its models do not know).
    async fn raw_container_list(
        &self,
        filters: &HashMap<String, Vec<String>>,
    ) -> Result<Vec<serde_json::Value>, EngineError> {
        let docker = self.api().await?;
        let version = docker.client_version();
        let filters = serde_json::to_string(filters).unwrap_or_default();
        let path = format!(
            "/v{}.{}/containers/json?all=1&filters={}",
            version.major_version,
            version.minor_version,
            percent_encode(&filters)
        );
        let doing = "listing containers (as plain JSON)";
        let body = raw_get(&self.host, &path)
            .await
            .map_err(|why| EngineError::Api(format!("{doing}: {why}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| EngineError::Api(format!("{doing}: the engine's answer is not JSON: {e}")))
    }

    /// A `NotReady` error carrying the container's last log lines.
    async fn not_ready(&self, container: &ObservedContainer, state: String) -> EngineError {
        let last_lines = self
            .logs(&container.id, LAST_LINES)
            .await
            .unwrap_or_else(|e| vec![format!("(could not read the log: {e})")]);
        EngineError::NotReady {
            container: container.name.clone(),
            state,
            last_lines,
        }
    }
}

/// What one look at a starting container says.
#[derive(Debug, PartialEq, Eq)]
enum Readiness {
    Ready,
    Waiting { running: bool },
    Failed(String),
}

/// Ready is running on two looks in a row (so a process that dies at once is
/// not taken for up), or healthy when the container has a check.
fn readiness(container: &ObservedContainer, running_before: bool) -> Readiness {
    match (&container.state, container.health) {
        (ContainerState::Running, Some(HealthState::Healthy)) => Readiness::Ready,
        (ContainerState::Running, Some(HealthState::Unhealthy)) => {
            Readiness::Failed("unhealthy".to_string())
        }
        (ContainerState::Running, Some(HealthState::Starting)) => {
            Readiness::Waiting { running: false }
        }
        (ContainerState::Running, None) if running_before => Readiness::Ready,
        (ContainerState::Running, None) => Readiness::Waiting { running: true },
        (ContainerState::Created, _) => Readiness::Waiting { running: false },
        _ => Readiness::Failed(describe(container)),
    }
}

/// A container's state in a few words: `running`, `exited (1)`, `restarting after 2 restarts`.
fn describe(container: &ObservedContainer) -> String {
    let state = match &container.state {
        ContainerState::Created => "created".to_string(),
        ContainerState::Running => "running".to_string(),
        ContainerState::Paused => "paused".to_string(),
        ContainerState::Restarting => {
            format!("restarting after {} restarts", container.restart_count)
        }
        ContainerState::Exited { code } => format!("exited ({code})"),
        ContainerState::Other(other) => other.clone(),
    };
    match container.health {
        Some(HealthState::Starting) => format!("{state}, health check starting"),
        Some(HealthState::Healthy) => format!("{state}, healthy"),
        Some(HealthState::Unhealthy) => format!("{state}, unhealthy"),
        None => state,
    }
}

/// What the engine reports, in the port's terms.
fn observed(response: ContainerInspectResponse) -> ObservedContainer {
    let config = response.config.unwrap_or_default();
    let labels: BTreeMap<String, String> = config.labels.unwrap_or_default().into_iter().collect();
    let state = response.state.unwrap_or_default();
    let container_state = match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited {
            code: state.exit_code.unwrap_or_default(),
        },
        Some(other) => ContainerState::Other(other.to_string()),
        None => ContainerState::Other("unknown".to_string()),
    };
    let health = match state.health.and_then(|h| h.status) {
        Some(HealthStatusEnum::STARTING) => Some(HealthState::Starting),
        Some(HealthStatusEnum::HEALTHY) => Some(HealthState::Healthy),
        Some(HealthStatusEnum::UNHEALTHY) => Some(HealthState::Unhealthy),
        Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => None,
    };
    ObservedContainer {
        id: response.id.unwrap_or_default(),
        name: response
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        service: labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
        labels,
        image: config.image.unwrap_or_default(),
        state: container_state,
        health,
        restart_count: response.restart_count.unwrap_or_default(),
    }
}

/// The id of a raw container summary.
fn summary_id(summary: &serde_json::Value) -> Option<String> {
    summary.get("Id")?.as_str().map(str::to_string)
}

/// What a raw container summary says, for a container bollard cannot read.
fn observed_from_summary(summary: &serde_json::Value) -> ObservedContainer {
    let text = |key: &str| {
        summary
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    };
    let labels: BTreeMap<String, String> = summary
        .get("Labels")
        .and_then(|l| l.as_object())
        .map(|l| {
            l.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let status = text("Status");
    let state = match text("State") {
        "created" => ContainerState::Created,
        "running" => ContainerState::Running,
        "paused" => ContainerState::Paused,
        "restarting" => ContainerState::Restarting,
        // `Exited (137) 3 minutes ago`
        "exited" => ContainerState::Exited {
            code: status
                .split_once('(')
                .and_then(|(_, rest)| rest.split_once(')'))
                .and_then(|(code, _)| code.parse().ok())
                .unwrap_or_default(),
        },
        other => ContainerState::Other(other.to_string()),
    };
    let health = if status.contains("(healthy)") {
        Some(HealthState::Healthy)
    } else if status.contains("(unhealthy)") {
        Some(HealthState::Unhealthy)
    } else if status.contains("(health: starting)") {
        Some(HealthState::Starting)
    } else {
        None
    };
    ObservedContainer {
        id: text("Id").to_string(),
        name: summary
            .get("Names")
            .and_then(|n| n.get(0))
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        service: labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
        labels,
        image: text("Image").to_string(),
        state,
        health,
        restart_count: 0,
    }
}

/// Whether bollard got an answer but could not read it into its models.
fn is_unreadable(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. }
    )
}

/// Percent-encode a query value (everything but unreserved characters).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One HTTP/1.0 GET to the engine (`unix://`, `tcp://` or `http://` hosts),
/// giving the body of a 200 answer.
async fn raw_get(host: &str, path: &str) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n");
    let mut answer = Vec::new();
    let timeout = REQUEST_TIMEOUT;
    let exchange = async {
        if let Some(socket) = host.strip_prefix("unix://") {
            let mut stream = tokio::net::UnixStream::connect(socket).await?;
            stream.write_all(request.as_bytes()).await?;
            stream.read_to_end(&mut answer).await?;
        } else {
            let address = host
                .strip_prefix("tcp://")
                .or_else(|| host.strip_prefix("http://"))
                .unwrap_or(host)
                .trim_end_matches('/');
            let mut stream = tokio::net::TcpStream::connect(address).await?;
            stream.write_all(request.as_bytes()).await?;
            stream.read_to_end(&mut answer).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {}s", timeout.as_secs()))?
        .map_err(|e| e.to_string())?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the engine's answer has no end of headers")?;
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let body = answer[split + 4..].to_vec();
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!(
            "the engine answered `{status}`: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return dechunk(&body);
    }
    Ok(body)
}

/// Undo HTTP chunked transfer encoding.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk has no size line")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size `{size_text}`"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or("a chunk is cut short")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

/// The engine's create request for a spec.
fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, EngineError> {
    let mut exposed: BTreeSet<String> = spec.expose.iter().map(|p| port_key(p)).collect();
    let mut port_bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
    for port in &spec.ports {
        let key = format!("{}/{}", port.container_port, port.protocol);
        exposed.insert(key.clone());
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(DockerPortBinding {
                host_ip: port.host_ip.clone(),
                host_port: port.host_port.map(|p| p.to_string()),
            });
    }
    let mut binds = Vec::new();
    let mut anonymous = Vec::new();
    for mount in &spec.volumes {
        match mount {
            Mount::Named {
                name: source,
                target,
                read_only,
            }
            | Mount::Bind {
                source,
                target,
                read_only,
            } => binds.push(if *read_only {
                format!("{source}:{target}:ro")
            } else {
                format!("{source}:{target}")
            }),
            Mount::Anonymous { target } => anonymous.push(target.clone()),
        }
    }
    let restart_policy = spec
        .restart
        .as_deref()
        .map(|r| restart_policy(r).ok_or_else(|| EngineError::Api(format!(
            "container {}: unknown restart policy {r:?} (expected no, always, on-failure[:N] or unless-stopped)",
            spec.name
        ))))
        .transpose()?;
    let networking_config = (!spec.network.is_empty()).then(|| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            spec.network.clone(),
            EndpointSettings {
                aliases: (!spec.aliases.is_empty()).then(|| spec.aliases.clone()),
                ..Default::default()
            },
        )])),
    });
    let o = &spec.options;
    let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let host_network = o.host_network;
    let host_config = HostConfig {
        binds: (!binds.is_empty()).then_some(binds),
        port_bindings: (!port_bindings.is_empty() && !host_network).then_some(port_bindings),
        network_mode: if host_network {
            Some("host".to_string())
        } else {
            (!spec.network.is_empty()).then(|| spec.network.clone())
        },
        restart_policy,
        nano_cpus: spec.nano_cpus,
        memory: spec.memory_bytes,
        memory_reservation: o.memory_reservation,
        cpu_shares: o.cpu_shares,
        pids_limit: o.pids_limit,
        init: o.init,
        readonly_rootfs: o.read_only.then_some(true),
        extra_hosts: some_vec(&o.extra_hosts),
        dns: some_vec(&o.dns),
        shm_size: o.shm_size,
        tmpfs: (!o.tmpfs.is_empty()).then(|| {
            o.tmpfs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        ulimits: (!o.ulimits.is_empty()).then(|| {
            o.ulimits
                .iter()
                .map(|(name, (soft, hard))| ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(*soft),
                    hard: Some(*hard),
                })
                .collect()
        }),
        sysctls: (!o.sysctls.is_empty()).then(|| {
            o.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        cap_drop: some_vec(&o.cap_drop),
        cap_add: some_vec(&o.cap_add),
        privileged: o.privileged.then_some(true),
        devices: (!o.devices.is_empty()).then(|| {
            o.devices
                .iter()
                .map(|d| {
                    let mut parts = d.splitn(3, ':');
                    let host = parts.next().unwrap_or_default().to_string();
                    let container = parts.next().map_or_else(|| host.clone(), str::to_string);
                    DeviceMapping {
                        path_on_host: Some(host),
                        path_in_container: Some(container),
                        cgroup_permissions: Some(parts.next().unwrap_or("rwm").to_string()),
                    }
                })
                .collect()
        }),
        pid_mode: o.pid.clone(),
        ipc_mode: o.ipc.clone(),
        runtime: o.runtime.clone(),
        security_opt: some_vec(&o.security_opt),
        log_config: o.log_driver.as_ref().map(|driver| HostConfigLogConfig {
            typ: Some(driver.clone()),
            config: (!o.log_options.is_empty()).then(|| {
                o.log_options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
        }),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(to_hash_map(&spec.labels)),
        exposed_ports: (!exposed.is_empty()).then(|| exposed.into_iter().collect()),
        volumes: (!anonymous.is_empty()).then_some(anonymous),
        healthcheck: spec.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: h.interval_ns,
            timeout: h.timeout_ns,
            start_period: h.start_period_ns,
            retries: h.retries,
            ..Default::default()
        }),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        stop_signal: o.stop_signal.clone(),
        stop_timeout: o.stop_timeout_s,
        tty: o.tty.then_some(true),
        open_stdin: o.stdin_open.then_some(true),
        hostname: o.hostname.clone(),
        host_config: Some(host_config),
        networking_config: if host_network {
            None
        } else {
            networking_config
        },
        ..Default::default()
    })
}

/// `8080` → `8080/tcp`; `53/udp` stays.
fn port_key(port: &str) -> String {
    if port.contains('/') {
        port.to_string()
    } else {
        format!("{port}/tcp")
    }
}

/// Compose's `restart:` values; `None` for anything else.
fn restart_policy(value: &str) -> Option<RestartPolicy> {
    let (name, retries) = match value.split_once(':') {
        Some(("on-failure", n)) => (
            RestartPolicyNameEnum::ON_FAILURE,
            Some(n.trim().parse::<i64>().ok()?),
        ),
        Some(_) => return None,
        None => match value {
            "no" | "" => (RestartPolicyNameEnum::NO, None),
            "always" => (RestartPolicyNameEnum::ALWAYS, None),
            "on-failure" => (RestartPolicyNameEnum::ON_FAILURE, None),
            "unless-stopped" => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
            _ => return None,
        },
    };
    Some(RestartPolicy {
        name: Some(name),
        maximum_retry_count: retries,
    })
}

/// `repo:tag` → (`repo`, `tag`); no tag means `latest`. A `:` before the last
/// `/` is a registry port, not a tag.
pub(super) fn split_reference(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

/// The engine's `label=k=v` filter: objects carrying every label.
pub(super) fn label_filters(labels: &BTreeMap<String, String>) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )])
}

fn describe_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn to_hash_map(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(super) fn is_status(e: &BollardError, status: u16) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// Errors that mean we never got an answer, as opposed to an answer saying no.
fn is_connection_error(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::HyperLegacyError { .. }
            | BollardError::IOError { .. }
            | BollardError::SocketNotFoundError(_)
            | BollardError::HyperResponseError { .. }
            | BollardError::UnsupportedURISchemeError { .. }
    )
}

/// An error and its causes, `a: b: c` (bollard's outer messages say little alone).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Cuts a byte stream into lines (output chunks need not end at a newline).
#[derive(Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    fn feed(&mut self, bytes: &[u8], emit: &(dyn Fn(&str) + Send + Sync)) {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            Self::emit_line(&line[..end], emit);
        }
    }

    fn finish(&mut self, emit: &(dyn Fn(&str) + Send + Sync)) {
        let rest = std::mem::take(&mut self.pending);
        Self::emit_line(&rest, emit);
    }

    fn emit_line(line: &[u8], emit: &(dyn Fn(&str) + Send + Sync)) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if !text.trim().is_empty() {
            emit(text);
        }
    }
}

/// The last [`LAST_LINES`] lines seen.
#[derive(Default)]
struct LastLines(VecDeque<String>);

impl LastLines {
    fn push(&mut self, line: &str) {
        if self.0.len() == LAST_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line.to_string());
    }

    fn into_vec(self) -> Vec<String> {
        self.0.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Health, PortBinding};

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let out = std::sync::Mutex::new(Vec::new());
        let emit = |l: &str| out.lock().unwrap().push(l.to_string());
        let mut splitter = LineSplitter::default();
        for chunk in chunks {
            splitter.feed(chunk, &emit);
        }
        splitter.finish(&emit);
        out.into_inner().unwrap()
    }

    #[test]
    fn output_split_across_chunks_is_reassembled_into_lines() {
        assert_eq!(
            lines_of(&[b"Step 1/2 : FR", b"OM x\r\n\n ---> abc\nlast"]),
            ["Step 1/2 : FROM x", " ---> abc", "last"]
        );
    }

    #[test]
    fn last_lines_keeps_only_the_tail() {
        let mut tail = LastLines::default();
        for i in 0..30 {
            tail.push(&i.to_string());
        }
        let lines = tail.into_vec();
        assert_eq!(lines.len(), LAST_LINES);
        assert_eq!(lines.first().map(String::as_str), Some("10"));
        assert_eq!(lines.last().map(String::as_str), Some("29"));
    }

    #[test]
    fn reference_splits_into_repo_and_tag_respecting_registry_ports() {
        assert_eq!(split_reference("shop/web:abc"), ("shop/web", "abc"));
        assert_eq!(split_reference("shop/web"), ("shop/web", "latest"));
        assert_eq!(
            split_reference("localhost:5000/shop/web"),
            ("localhost:5000/shop/web", "latest")
        );
        assert_eq!(
            split_reference("localhost:5000/web:1"),
            ("localhost:5000/web", "1")
        );
    }

    #[test]
    fn restart_policies_follow_compose_values() {
        let name = |v| restart_policy(v).and_then(|p| p.name);
        assert_eq!(name("always"), Some(RestartPolicyNameEnum::ALWAYS));
        assert_eq!(name("no"), Some(RestartPolicyNameEnum::NO));
        assert_eq!(
            name("unless-stopped"),
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let retries = restart_policy("on-failure:3").expect("valid");
        assert_eq!(retries.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(retries.maximum_retry_count, Some(3));
        assert_eq!(restart_policy("sometimes"), None);
        assert_eq!(restart_policy("on-failure:x"), None);
    }

    #[test]
    fn unknown_restart_policy_is_an_error_naming_the_container() {
        let spec = ContainerSpec {
            name: "shop-dev-web".into(),
            restart: Some("sometimes".into()),
            ..Default::default()
        };
        let message = create_body(&spec).unwrap_err().to_string();
        assert!(message.contains("shop-dev-web"), "{message}");
        assert!(message.contains("sometimes"), "{message}");
    }

    #[test]
    fn spec_becomes_a_create_request_with_network_aliases_ports_mounts_and_limits() {
        let spec = ContainerSpec {
            name: "shop-dev-web".into(),
            image: "shop/web:k1".into(),
            command: Some(vec!["httpd".into(), "-f".into()]),
            env: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            labels: BTreeMap::from([(LABEL_SERVICE.into(), "web".into())]),
            network: "marvin-shop-dev".into(),
            aliases: vec!["web".into(), "www".into()],
            ports: vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(8000),
                container_port: 8080,
                protocol: "tcp".into(),
            }],
            expose: vec!["9000".into(), "53/udp".into()],
            volumes: vec![
                Mount::Named {
                    name: "shop-dev-data".into(),
                    target: "/data".into(),
                    read_only: false,
                },
                Mount::Bind {
                    source: "/srv/conf".into(),
                    target: "/conf".into(),
                    read_only: true,
                },
                Mount::Anonymous {
                    target: "/cache".into(),
                },
            ],
            healthcheck: Some(Health {
                test: vec!["CMD".into(), "true".into()],
                interval_ns: Some(1_000_000_000),
                timeout_ns: None,
                start_period_ns: None,
                retries: Some(3),
            }),
            restart: Some("unless-stopped".into()),
            nano_cpus: Some(500_000_000),
            memory_bytes: Some(1 << 30),
            ..Default::default()
        };
        let body = create_body(&spec).expect("valid spec");
        assert_eq!(body.env, Some(vec!["A=1".to_string(), "B=x=y".to_string()]));
        assert_eq!(
            body.exposed_ports,
            Some(vec![
                "53/udp".to_string(),
                "8080/tcp".to_string(),
                "9000/tcp".to_string()
            ])
        );
        assert_eq!(body.volumes, Some(vec!["/cache".to_string()]));
        let endpoints = body
            .networking_config
            .and_then(|n| n.endpoints_config)
            .expect("endpoint");
        assert_eq!(
            endpoints["marvin-shop-dev"].aliases,
            Some(vec!["web".to_string(), "www".to_string()])
        );
        let host = body.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("marvin-shop-dev"));
        assert_eq!(
            host.binds,
            Some(vec![
                "shop-dev-data:/data".to_string(),
                "/srv/conf:/conf:ro".to_string()
            ])
        );
        let bindings = host.port_bindings.expect("ports");
        let binding = &bindings["8080/tcp"].as_ref().expect("binding")[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some("8000"));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(1 << 30));
        assert_eq!(
            host.restart_policy.and_then(|p| p.name),
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        assert_eq!(body.healthcheck.and_then(|h| h.retries), Some(3));
    }

    fn container(state: ContainerState, health: Option<HealthState>) -> ObservedContainer {
        ObservedContainer {
            id: "abc".into(),
            name: "shop-dev-web".into(),
            service: "web".into(),
            labels: BTreeMap::new(),
            image: "shop/web:k1".into(),
            state,
            health,
            restart_count: 2,
        }
    }

    #[test]
    fn running_without_a_check_is_ready_only_on_the_second_look() {
        let c = container(ContainerState::Running, None);
        assert_eq!(readiness(&c, false), Readiness::Waiting { running: true });
        assert_eq!(readiness(&c, true), Readiness::Ready);
    }

    #[test]
    fn a_health_check_decides_readiness_when_there_is_one() {
        let starting = container(ContainerState::Running, Some(HealthState::Starting));
        assert_eq!(
            readiness(&starting, true),
            Readiness::Waiting { running: false }
        );
        let healthy = container(ContainerState::Running, Some(HealthState::Healthy));
        assert_eq!(readiness(&healthy, false), Readiness::Ready);
        let unhealthy = container(ContainerState::Running, Some(HealthState::Unhealthy));
        assert_eq!(
            readiness(&unhealthy, false),
            Readiness::Failed("unhealthy".into())
        );
    }

    #[test]
    fn exited_or_restarting_containers_fail_with_their_state() {
        let exited = container(ContainerState::Exited { code: 3 }, None);
        assert_eq!(
            readiness(&exited, true),
            Readiness::Failed("exited (3)".into())
        );
        let restarting = container(ContainerState::Restarting, None);
        assert_eq!(
            readiness(&restarting, true),
            Readiness::Failed("restarting after 2 restarts".into())
        );
    }
}
