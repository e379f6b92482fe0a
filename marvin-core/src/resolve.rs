//! From an environment's name to its plan: fetch, resolve commits, render the
//! compose template from the merged workspace, compute build keys and the
//! desired containers. Reads git objects (blocking); decides nothing itself:
//! the decisions are the pure functions of [`crate::keys`], [`crate::plan`]
//! and [`crate::desired`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::compose::{self, ComposeFile};
use crate::config::{Environment, Project};
use crate::desired::{self, DesiredContainer, DesiredInput, ServiceImage};
use crate::dockerfile;
use crate::keys::{self, BuildInputs, BuildKey};
use crate::plan::{self, BuildStep, DeployStep, ObservedService, PlanCounts, WantedImage};
use crate::source::{Commit, Mirrors, RepoSpec, SourceError, Workspace};

/// Why an environment could not be resolved or planned.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Fetching or reading git failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The compose file is missing or wrong.
    #[error(transparent)]
    Compose(#[from] compose::ComposeError),
    /// The compose file is not in the workspace.
    #[error(
        "the compose file `{path}` is not in the merged workspace of environment `{env}`; set `compose:` in {config} to its path"
    )]
    ComposeMissing {
        /// Workspace path looked for.
        path: String,
        /// Environment.
        env: String,
        /// The marvin.yml file.
        config: String,
    },
    /// A service cannot be built or deployed as written.
    #[error("service `{service}`: {message}")]
    Service {
        /// The service.
        service: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// A service that is not in the compose file was named.
    #[error("unknown service `{name}` in environment `{env}`; {hint}")]
    UnknownService {
        /// What was typed.
        name: String,
        /// Environment.
        env: String,
        /// Suggestion.
        hint: String,
    },
    /// The desired state cannot be computed.
    #[error(transparent)]
    Desired(#[from] desired::DesiredErrors),
}

/// An environment resolved to commits, with its merged workspace and rendered compose file.
#[derive(Clone)]
pub struct Resolved {
    /// The environment.
    pub env: Environment,
    /// One commit per repo, in the order of marvin.yml.
    pub commits: Vec<Commit>,
    /// The merged workspace at those commits.
    pub workspace: Workspace,
    /// The rendered compose file.
    pub compose: ComposeFile,
    /// Where files mounted from git, secrets and configs are written (`<data>/files`).
    pub files_root: std::path::PathBuf,
}

/// How to build one service's image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceBuild {
    /// Compose service name.
    pub service: String,
    /// Workspace path of the build context.
    pub context: String,
    /// Workspace path of the Dockerfile.
    pub dockerfile: String,
    /// The inputs of its key.
    pub inputs: BuildInputs,
    /// Its build key.
    pub key: BuildKey,
    /// Its image tag.
    pub tag: String,
    /// `FROM` images that are built here: image name → service.
    pub from_services: BTreeMap<String, String>,
}

/// A plan, ready to print or to carry out.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Project name.
    pub project: String,
    /// Environment name.
    pub environment: String,
    /// Commits per repo.
    pub commits: Vec<Commit>,
    /// Build or reuse per built service.
    pub builds: Vec<BuildStep>,
    /// Create/recreate/keep/remove per container.
    pub deploy: Vec<DeployStep>,
    /// Services limited to (empty: all).
    pub only: Vec<String>,
    /// No engine answered, so no images and no containers were assumed to exist.
    pub assumed_empty_engine: bool,
    /// Things that work but deserve a look (a compose variable that is not
    /// set and became an empty string).
    pub warnings: Vec<String>,
    /// Build details per built service.
    #[serde(skip)]
    pub build_specs: BTreeMap<String, ServiceBuild>,
    /// Desired container per service.
    #[serde(skip)]
    pub desired: Vec<DesiredContainer>,
    /// Deploy order: waves of services that can start together.
    #[serde(skip)]
    pub waves: Vec<Vec<String>>,
}

impl Plan {
    /// Counts for the summary.
    pub fn counts(&self) -> PlanCounts {
        plan::counts(&self.builds, &self.deploy)
    }

    /// Whether anything would change.
    pub fn changes_anything(&self) -> bool {
        let c = self.counts();
        c.build + c.create + c.recreate + c.remove > 0
    }
}

/// The repo specs of a project, as the source port wants them.
pub fn repo_specs(project: &Project) -> Vec<RepoSpec> {
    project
        .repos
        .iter()
        .map(|r| RepoSpec {
            name: r.name.clone(),
            url: r.url.clone(),
            path: r.path.clone(),
        })
        .collect()
}

/// Fetch (when `fetch`), resolve each repo's branch, open the workspace and
/// render the compose file. Blocking.
pub fn resolve(
    project: &Project,
    env: &Environment,
    mirrors: &Mirrors,
    fetch: bool,
) -> Result<Resolved, ResolveError> {
    let specs = repo_specs(project);
    let mut mounts = Vec::new();
    for spec in &specs {
        if fetch || !mirrors.has(spec) {
            mirrors.sync(spec)?;
        }
        let commit = mirrors.resolve(spec, env.branch_for(&spec.name))?;
        mounts.push((spec.clone(), commit));
    }
    resolve_at(project, env, mirrors, mounts)
}

/// Open the workspace at given commits and render the compose file (rollbacks use this).
pub fn resolve_at(
    project: &Project,
    env: &Environment,
    mirrors: &Mirrors,
    mounts: Vec<(RepoSpec, Commit)>,
) -> Result<Resolved, ResolveError> {
    let workspace = mirrors.workspace(&mounts)?;
    let text =
        workspace
            .read_file(&project.compose)?
            .ok_or_else(|| ResolveError::ComposeMissing {
                path: project.compose.clone(),
                env: env.name.clone(),
                config: project.file.clone(),
            })?;
    let text = String::from_utf8_lossy(&text);
    let vars = compose_vars(project, env, &workspace)?;
    let compose = compose::render(&text, &project.compose, &vars)?;
    Ok(Resolved {
        env: env.clone(),
        commits: mounts.into_iter().map(|(_, c)| c).collect(),
        workspace,
        compose,
        files_root: mirrors.files_root(),
    })
}

/// The variables a compose file is rendered with: the `.env` file beside it
/// (from git, when there is one), then the environment's `vars`, which win.
pub fn compose_vars(
    project: &Project,
    env: &Environment,
    workspace: &Workspace,
) -> Result<BTreeMap<String, String>, ResolveError> {
    let dir = project
        .compose
        .rsplit_once('/')
        .map_or(String::new(), |(d, _)| format!("{d}/"));
    let mut vars = BTreeMap::new();
    if let Some(text) = workspace.read_file(&format!("{dir}.env"))? {
        vars.extend(desired::parse_env_file(&String::from_utf8_lossy(&text)));
    }
    vars.extend(env.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(vars)
}

/// Build keys of every service that has `build:`, in dependency order
/// (`FROM` an image another service builds). Reads a few git objects per service.
pub fn build_specs(
    project: &Project,
    resolved: &Resolved,
) -> Result<BTreeMap<String, ServiceBuild>, ResolveError> {
    let services = &resolved.compose.services;
    // Image names that a built service produces (its compose `image:`), so a
    // Dockerfile `FROM` that image depends on that service's key.
    let produced = produced_images(&resolved.compose);

    struct Pending {
        context: String,
        dockerfile: String,
        dockerfile_in_tar: String,
        tree: String,
        mounts: Vec<(String, String)>,
        blob: String,
        from: BTreeMap<String, String>,
    }
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    for (name, service) in services {
        let Some(build) = &service.build else {
            continue;
        };
        let svc_err = |message: String| ResolveError::Service {
            service: name.clone(),
            message,
        };
        let context =
            desired::relative_to_compose(&project.compose, &build.context).ok_or_else(|| {
                svc_err(format!(
                    "build context `{}` leaves the workspace",
                    build.context
                ))
            })?;
        let shown = if context.is_empty() { "." } else { &context };
        // Source errors here (a file, a submodule, an escaping symlink) are
        // the service's mistake: name it.
        let dir = resolved
            .workspace
            .dir_id(&context)
            .map_err(|e| svc_err(format!("build context: {e}")))?
            .ok_or_else(|| {
                svc_err(format!(
                    "build context `{shown}` does not exist in the merged workspace at {}",
                    commits_text(&resolved.commits)
                ))
            })?;
        let dockerfile = if context.is_empty() {
            config_path(&build.dockerfile)
        } else {
            config_path(&format!("{context}/{}", build.dockerfile))
        }
        .ok_or_else(|| {
            svc_err(format!(
                "dockerfile `{}` leaves the workspace",
                build.dockerfile
            ))
        })?;
        let blob = resolved
            .workspace
            .blob_id(&dockerfile)
            .map_err(|e| svc_err(format!("Dockerfile: {e}")))?
            .ok_or_else(|| {
            svc_err(format!(
                "Dockerfile `{dockerfile}` does not exist in the merged workspace (build context `{shown}`)"
            ))
        })?;
        let text = resolved
            .workspace
            .read_file(&dockerfile)
            .map_err(|e| svc_err(format!("Dockerfile: {e}")))?
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let from: BTreeMap<String, String> = dockerfile::from_images(&text, &build.args)
            .into_iter()
            .filter_map(|f| {
                produced
                    .get(&image_ref(&f.image))
                    .map(|s| (f.image, s.to_string()))
            })
            .filter(|(_, s)| s != name)
            .collect();
        let prefix = if context.is_empty() {
            String::new()
        } else {
            format!("{context}/")
        };
        let dockerfile_in_tar = dockerfile
            .strip_prefix(&prefix)
            .map(str::to_string)
            .unwrap_or_else(|| format!(".marvin.{name}.Dockerfile"));
        pending.insert(
            name.clone(),
            Pending {
                context,
                dockerfile,
                dockerfile_in_tar,
                tree: dir.tree,
                mounts: dir.mounts,
                blob,
                from,
            },
        );
    }

    let depends: BTreeMap<String, BTreeSet<String>> = pending
        .iter()
        .map(|(n, p)| (n.clone(), p.from.values().cloned().collect()))
        .collect();
    let waves = plan::deploy_waves(&depends).map_err(|m| ResolveError::Service {
        service: depends.keys().next().cloned().unwrap_or_default(),
        message: format!("Dockerfiles build FROM each other in a cycle: {m}"),
    })?;
    let mut out: BTreeMap<String, ServiceBuild> = BTreeMap::new();
    for name in waves.into_iter().flatten() {
        let p = pending.remove(&name).expect("every wave member is pending");
        let build = services[&name]
            .build
            .as_ref()
            .expect("pending services have a build");
        let from_keys = p
            .from
            .iter()
            .map(|(image, service)| (image.clone(), out[service].key.clone()))
            .collect();
        let inputs = BuildInputs {
            context_tree: p.tree,
            context_mounts: p.mounts,
            dockerfile_path: p.dockerfile_in_tar,
            dockerfile_blob: p.blob,
            args: build.args.clone(),
            target: build.target.clone(),
            platform: build.platform.clone(),
            from_keys,
        };
        let key = keys::build_key(&inputs);
        // A swarm's nodes pull from the registry: the tag names it.
        let tag = match (&resolved.env.engine, &resolved.env.registry) {
            (crate::config::EngineKind::Swarm, Some(registry)) => {
                keys::registry_image_tag(registry, &project.name, &name, &key)
            }
            _ => keys::image_tag(&project.name, &name, &key),
        };
        out.insert(
            name.clone(),
            ServiceBuild {
                service: name.clone(),
                context: p.context,
                dockerfile: p.dockerfile,
                inputs,
                key,
                tag,
                from_services: p.from,
            },
        );
    }
    Ok(out)
}

/// Image names (normalised by [`image_ref`]) that built services produce → the service.
fn produced_images(compose: &ComposeFile) -> BTreeMap<String, &str> {
    compose
        .services
        .iter()
        .filter(|(_, s)| s.build.is_some())
        .filter_map(|(n, s)| s.image.as_deref().map(|i| (image_ref(i), n.as_str())))
        .collect()
}

/// An image name as Docker reads it: `name` means `name:latest`, so
/// `FROM cloudmatrix/base` and `image: cloudmatrix/base:latest` are the same image.
fn image_ref(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || image.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

fn config_path(p: &str) -> Option<String> {
    crate::config::normalize_path(p)
}

fn commits_text(commits: &[Commit]) -> String {
    commits
        .iter()
        .map(|c| format!("{} {}", c.repo, &c.id[..c.id.len().min(7)]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The image every service runs.
pub fn service_images(
    resolved: &Resolved,
    builds: &BTreeMap<String, ServiceBuild>,
) -> BTreeMap<String, ServiceImage> {
    let built_here = |b: &ServiceBuild| ServiceImage {
        tag: b.tag.clone(),
        key: Some(b.key.clone()),
    };
    // A service without `build:` whose image another service builds runs
    // that build: the engine has only Marvin's tag, never the compose name.
    let produced = produced_images(&resolved.compose);
    resolved
        .compose
        .services
        .iter()
        .filter_map(|(name, s)| match builds.get(name) {
            Some(b) => Some((name.clone(), built_here(b))),
            None => s.image.as_ref().map(|image| {
                let image = match produced.get(&image_ref(image)).and_then(|p| builds.get(*p)) {
                    Some(b) => built_here(b),
                    None => ServiceImage {
                        tag: image.clone(),
                        key: None,
                    },
                };
                (name.clone(), image)
            }),
        })
        .collect()
}

/// The desired containers of the environment (reads its env files from the workspace).
pub fn desired_containers(
    project: &Project,
    resolved: &Resolved,
    builds: &BTreeMap<String, ServiceBuild>,
) -> Result<Vec<DesiredContainer>, ResolveError> {
    let mut env_files = BTreeMap::new();
    for path in desired::env_file_paths(&project.compose, &resolved.compose, &resolved.env) {
        match resolved.workspace.read_file(&path)? {
            Some(bytes) => {
                env_files.insert(path, String::from_utf8_lossy(&bytes).into_owned());
            }
            None => {
                return Err(ResolveError::Service {
                    service: "*".into(),
                    message: format!("env file `{path}` does not exist in the merged workspace"),
                });
            }
        }
    }
    let images = service_images(resolved, builds);
    let commits: BTreeMap<String, String> = resolved
        .commits
        .iter()
        .map(|c| (c.repo.clone(), c.id.clone()))
        .collect();
    // Every problem at once: those of the files from git and those of the
    // containers are reported together.
    let (files, file_problems) = match mounted_files(project, resolved) {
        Ok(files) => (files, None),
        Err(ResolveError::Desired(errors)) => (BTreeMap::new(), Some(errors)),
        Err(other) => return Err(other),
    };
    let files_root = resolved.files_root.to_string_lossy();
    let containers = desired::desired_containers(&DesiredInput {
        project: &project.name,
        env: &resolved.env,
        compose_path: &project.compose,
        compose: &resolved.compose,
        images: &images,
        env_files: &env_files,
        commits: &commits,
        files: &files,
        files_root: &files_root,
    });
    match (containers, file_problems) {
        (Ok(containers), None) => Ok(containers),
        (Ok(_), Some(files)) => Err(files.into()),
        (Err(more), files) => {
            let mut all = files.unwrap_or_else(|| desired::DesiredErrors {
                file: more.file.clone(),
                problems: Vec::new(),
            });
            all.problems.extend(more.problems);
            Err(all.into())
        }
    }
}

/// Files from git, secrets and configs of every service, with content ids
/// ([`crate::files`], [`crate::materialize`]); every problem at once.
fn mounted_files(
    project: &Project,
    resolved: &Resolved,
) -> Result<BTreeMap<String, Vec<crate::files::FileMount>>, ResolveError> {
    let problems = |errors: Vec<desired::DesiredError>| {
        ResolveError::Desired(desired::DesiredErrors {
            file: project.compose.clone(),
            problems: errors
                .into_iter()
                .map(|error| desired::PlacedError {
                    path: format!("services.{}", error.service),
                    location: None,
                    error,
                })
                .collect(),
        })
    };
    let requests = crate::files::requests(&project.compose, &resolved.compose).map_err(problems)?;
    if requests.is_empty() {
        return Ok(BTreeMap::new());
    }
    if resolved.env.engine == crate::config::EngineKind::Swarm {
        let (service, list) = requests.iter().next().expect("not empty");
        return Err(ResolveError::Service {
            service: service.clone(),
            message: format!(
                "{} (and any file from git, secret or config) cannot be mounted in swarm environment `{}` yet: a swarm's nodes have no copy of Marvin's files; COPY the files into the image, or deploy this environment with `engine: docker`",
                list[0].what, resolved.env.name
            ),
        });
    }
    let text = resolved
        .workspace
        .read_file(&project.compose)?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let var = |name: &str| std::env::var(name).ok();
    crate::materialize::lookup(
        &crate::materialize::Lookup {
            workspace: &resolved.workspace,
            compose_path: &project.compose,
            compose_text: &text,
            commits: &commits_text(&resolved.commits),
            files_root: &resolved.files_root,
            var: &var,
        },
        &requests,
    )
    .map_err(problems)
}

/// What the engine holds, as the planner needs it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Build keys of images present.
    pub image_keys: BTreeSet<BuildKey>,
    /// The environment's containers by service.
    pub services: BTreeMap<String, ObservedService>,
    /// No engine answered: all of the above assumed empty.
    pub engine_unreachable: bool,
}

/// The whole plan for an environment, given what the engine holds. `only`
/// limits it to some services (no removals then); `force` rebuilds them.
pub fn make_plan(
    project: &Project,
    resolved: &Resolved,
    observed: &Observed,
    only: &[String],
    force: bool,
) -> Result<Plan, ResolveError> {
    for name in only {
        if !resolved.compose.services.contains_key(name) {
            return Err(ResolveError::UnknownService {
                name: name.clone(),
                env: resolved.env.name.clone(),
                hint: crate::suggest::hint(
                    name,
                    resolved.compose.services.keys().map(String::as_str),
                ),
            });
        }
    }
    let selected = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let build_specs = build_specs(project, resolved)?;
    let desired = desired_containers(project, resolved, &build_specs)?;

    // Images the selected services build FROM must exist too: include them
    // (build or reuse), though their containers are not touched.
    let mut needed: BTreeSet<String> = build_specs
        .keys()
        .filter(|s| selected(s))
        .cloned()
        .collect();
    // A selected service may run an image another service builds.
    for d in desired.iter().filter(|d| selected(&d.service)) {
        if let Some(key) = &d.build_key {
            needed.extend(
                build_specs
                    .values()
                    .filter(|b| &b.key == key)
                    .map(|b| b.service.clone()),
            );
        }
    }
    let mut frontier: Vec<String> = needed.iter().cloned().collect();
    while let Some(s) = frontier.pop() {
        for dep in build_specs[&s].from_services.values() {
            if needed.insert(dep.clone()) {
                frontier.push(dep.clone());
            }
        }
    }
    let wanted: Vec<WantedImage> = build_specs
        .values()
        .filter(|b| needed.contains(&b.service))
        .map(|b| WantedImage {
            service: b.service.clone(),
            key: b.key.clone(),
            image: b.tag.clone(),
        })
        .collect();
    let forced: BTreeSet<String> = if force {
        wanted
            .iter()
            .filter(|w| selected(&w.service))
            .map(|w| w.service.clone())
            .collect()
    } else {
        BTreeSet::new()
    };
    let builds = plan::plan_builds(&wanted, &observed.image_keys, &forced);

    let desired_keys = desired
        .iter()
        .filter(|d| selected(&d.service))
        .map(|d| (d.service.clone(), d.deploy_key.clone()))
        .collect();
    let observed_services: BTreeMap<String, ObservedService> = observed
        .services
        .iter()
        .filter(|(s, _)| only.is_empty() || selected(s))
        .map(|(s, o)| (s.clone(), o.clone()))
        .collect();
    let deploy = plan::plan_deploy(&desired_keys, &observed_services);

    let depends: BTreeMap<String, BTreeSet<String>> = resolved
        .compose
        .services
        .iter()
        .map(|(n, s)| {
            let mut deps: BTreeSet<String> = s.depends_on.keys().cloned().collect();
            deps.extend(
                s.links
                    .iter()
                    .map(|l| l.split(':').next().unwrap_or(l).to_string()),
            );
            (n.clone(), deps)
        })
        .collect();
    let waves = plan::deploy_waves(&depends).map_err(|m| ResolveError::Service {
        service: "*".into(),
        message: m,
    })?;

    Ok(Plan {
        project: project.name.clone(),
        environment: resolved.env.name.clone(),
        commits: resolved.commits.clone(),
        builds,
        deploy,
        only: only.to_vec(),
        assumed_empty_engine: observed.engine_unreachable,
        warnings: resolved.compose.warnings.clone(),
        build_specs,
        desired,
        waves,
    })
}

#[cfg(test)]
mod tests {
    use super::image_ref;

    #[test]
    fn an_untagged_image_name_means_latest() {
        assert_eq!(image_ref("cloudmatrix/base"), "cloudmatrix/base:latest");
        assert_eq!(image_ref("cloudmatrix/base:1"), "cloudmatrix/base:1");
        assert_eq!(
            image_ref("registry:5000/cloudmatrix/base"),
            "registry:5000/cloudmatrix/base:latest"
        );
        assert_eq!(image_ref("busybox@sha256:abc"), "busybox@sha256:abc");
    }
}
