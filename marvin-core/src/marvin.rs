//! [`Marvin`]: one loaded project with its data directory and ports — the
//! handle every front end holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, EngineKind, Environment, Project};
use crate::engine::{
    ContainerState, Engine, EngineError, LABEL_ENV, LABEL_PROJECT, RegistryAuth, SwarmEngine,
};
use crate::keys::{BuildKey, DeployKey};
use crate::plan::{BuildAction, BuildReason, ObservedService};
use crate::resolve::{self, Observed, Plan, ResolveError};
use crate::source::Mirrors;

/// The config file name looked for.
pub const CONFIG_FILE: &str = "marvin.yml";
/// Environment variable overriding the data directory.
pub const DATA_DIR_ENV: &str = "MARVIN_DATA_DIR";

/// Anything a front end may have to tell a user.
#[derive(Debug, thiserror::Error)]
pub enum MarvinError {
    /// marvin.yml could not be found or read.
    #[error("{0}")]
    NoConfig(String),
    /// marvin.yml is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Resolving or planning failed.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A background task died.
    #[error("internal error: {0}")]
    Internal(String),
}

impl MarvinError {
    /// The problems of a compose file this error stands for, each with its
    /// file, line, column and service; empty for other errors.
    pub fn problems(&self) -> Vec<crate::compose::SourceProblem> {
        match self {
            MarvinError::Resolve(ResolveError::Compose(e)) => e.problems(),
            MarvinError::Resolve(ResolveError::Desired(e)) => e.problems(),
            _ => Vec::new(),
        }
    }
}

/// Options of `plan`.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Only these services (empty: all).
    pub services: Vec<String>,
    /// Rebuild even when the key is present.
    pub force: bool,
    /// Do not fetch; plan from the mirrors as they are.
    pub offline: bool,
}

/// A loaded project: its config, data directory, mirrors and engine.
#[derive(Clone)]
pub struct Marvin {
    /// The validated marvin.yml.
    pub project: Arc<Project>,
    /// Where marvin.yml is.
    pub config_path: PathBuf,
    /// Mirrors, database and other state live here.
    pub data_dir: PathBuf,
    /// Git mirrors.
    pub mirrors: Arc<Mirrors>,
    /// The container engine, when one is connected.
    pub engine: Option<Arc<dyn Engine>>,
}

/// Find `marvin.yml` in `start` or a parent directory.
pub fn find_config(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join(CONFIG_FILE))
        .find(|p| p.is_file())
}

/// The marvin.yml a front end should load: `explicit` (`-c/--config`) if
/// given, else the nearest one from the current directory up. `Err` is the
/// sentence for the user.
pub fn locate_config(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    find_config(&cwd).ok_or_else(|| {
        format!(
            "no marvin.yml in {} or any parent directory; pass one with -c/--config",
            cwd.display()
        )
    })
}

/// Until Ctrl-C or SIGTERM: how every long-running front end learns to stop.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl Marvin {
    /// Load a project from its marvin.yml. The data directory is
    /// `data_dir` if given, else `.marvin/` beside the file.
    pub fn load(config_path: &Path, data_dir: Option<PathBuf>) -> Result<Marvin, MarvinError> {
        let text = std::fs::read_to_string(config_path).map_err(|e| {
            MarvinError::NoConfig(format!("cannot read {}: {e}", config_path.display()))
        })?;
        let shown = config_path.display().to_string();
        let project = Project::parse(&text, &shown)?;
        let base = config_path.parent().unwrap_or(Path::new("."));
        let data_dir = data_dir.unwrap_or_else(|| base.join(".marvin"));
        Ok(Marvin {
            project: Arc::new(project),
            config_path: config_path.to_path_buf(),
            mirrors: Arc::new(Mirrors::new(data_dir.clone())),
            data_dir,
            engine: None,
        })
    }

    /// Use this engine.
    pub fn with_engine(mut self, engine: Arc<dyn Engine>) -> Marvin {
        self.engine = Some(engine);
        self
    }

    /// What the engine holds for an environment; when no engine answers,
    /// nothing (and say so).
    pub async fn observe(&self, env: &str) -> Result<Observed, MarvinError> {
        let Some(engine) = &self.engine else {
            return Ok(Observed {
                engine_unreachable: true,
                ..Observed::default()
            });
        };
        match tokio::time::timeout(Duration::from_secs(3), engine.ping()).await {
            Ok(Ok(())) => {}
            _ => {
                return Ok(Observed {
                    engine_unreachable: true,
                    ..Observed::default()
                });
            }
        }
        let image_keys: BTreeSet<BuildKey> = engine
            .image_keys(&self.project.name)
            .await?
            .into_iter()
            .map(BuildKey)
            .collect();
        let labels = BTreeMap::from([
            (LABEL_PROJECT.to_string(), self.project.name.clone()),
            (LABEL_ENV.to_string(), env.to_string()),
        ]);
        if self.project.environment(env)?.engine == EngineKind::Swarm {
            // A swarm environment's services are swarm services, not containers.
            let swarm = swarm_of(engine.as_ref())?;
            let services = swarm
                .list_services(&labels)
                .await?
                .into_iter()
                .filter(|s| !s.service.is_empty())
                .map(|s| {
                    let observed = ObservedService {
                        deploy_key: crate::swarm::deploy_key_of(&s),
                        running: true,
                    };
                    (s.service, observed)
                })
                .collect();
            return Ok(Observed {
                image_keys,
                services,
                engine_unreachable: false,
            });
        }
        let services = engine
            .list_containers(&labels)
            .await?
            .into_iter()
            .filter(|c| c.labels.get(crate::engine::LABEL_ROLE).map(String::as_str) != Some("task"))
            .filter(|c| !c.service.is_empty())
            .map(|c| {
                (
                    c.service.clone(),
                    ObservedService {
                        deploy_key: c.deploy_key().map(|k| DeployKey(k.to_string())),
                        running: c.state == ContainerState::Running,
                    },
                )
            })
            .collect();
        Ok(Observed {
            image_keys,
            services,
            engine_unreachable: false,
        })
    }

    /// Fetch, resolve and plan an environment (by name or alias) without changing anything.
    pub async fn plan(&self, env: &str, options: &PlanOptions) -> Result<Plan, MarvinError> {
        let environment = self.project.environment(env)?.clone();
        let project = Arc::clone(&self.project);
        let mirrors = Arc::clone(&self.mirrors);
        let fetch = !options.offline;
        let env_for_resolve = environment.clone();
        let resolved = tokio::task::spawn_blocking(move || {
            resolve::resolve(&project, &env_for_resolve, &mirrors, fetch)
        })
        .await
        .map_err(|e| MarvinError::Internal(e.to_string()))??;
        let observed = self.observe(&environment.name).await?;
        let project = Arc::clone(&self.project);
        let services = options.services.clone();
        let force = options.force;
        let plan = tokio::task::spawn_blocking(move || {
            resolve::make_plan(&project, &resolved, &observed, &services, force)
        })
        .await
        .map_err(|e| MarvinError::Internal(e.to_string()))??;
        self.reuse_from_registry(&environment, plan).await
    }

    /// For a swarm environment: images the plan would build whose tags the
    /// registry already holds are reused instead (docs/swarm.md). Other
    /// environments' plans are returned as they are.
    pub async fn reuse_from_registry(
        &self,
        env: &Environment,
        mut plan: Plan,
    ) -> Result<Plan, MarvinError> {
        let (EngineKind::Swarm, Some(registry), Some(engine)) =
            (env.engine, env.registry.as_deref(), self.engine.as_ref())
        else {
            return Ok(plan);
        };
        if plan.assumed_empty_engine {
            return Ok(plan);
        }
        let swarm = swarm_of(engine.as_ref())?;
        let auth = RegistryAuth::from_env(registry)?;
        let mut present = BTreeSet::new();
        for step in plan
            .builds
            .iter()
            .filter(|b| b.action == BuildAction::Build && b.reason == BuildReason::NewKey)
        {
            if swarm.registry_has(&step.image, auth.as_ref()).await? {
                present.insert(step.image.clone());
            }
        }
        plan.builds = crate::plan::reuse_from_registry(&plan.builds, &present);
        Ok(plan)
    }
}

/// The swarm side of an engine, or what to do about its absence.
pub(crate) fn swarm_of(engine: &dyn Engine) -> Result<&dyn SwarmEngine, EngineError> {
    engine.swarm().ok_or_else(|| {
        EngineError::Missing(
            "this engine has no swarm side; swarm environments need the Docker engine".into(),
        )
    })
}
