//! The executor's swarm side (docs/swarm.md): the same plan as for the single
//! engine, carried out as swarm services. Images the registry already holds
//! are pulled, not built; built images are pushed when the registry lacks
//! them; changed services are created or updated (with the version index
//! they were read at) and watched until every replica runs the new deploy
//! key — or until Swarm rolls the update back, which fails the job with the
//! service named. What a service should be and what a rollout's state means
//! are the pure decisions of [`crate::swarm`].

use std::collections::BTreeSet;

use super::*;
use crate::config::{EngineKind, Environment};
use crate::engine::{RegistryAuth, SwarmEngine};
use crate::marvin::swarm_of;
use crate::plan::BuildReason;
use crate::swarm::Rollout;

/// How often a rollout is looked at.
const ROLLOUT_POLL: Duration = Duration::from_millis(500);

impl Runtime {
    /// The environment, when it deploys to a swarm.
    fn swarm_env(&self, env: &str) -> Option<Environment> {
        self.inner
            .marvin
            .project
            .environment(env)
            .ok()
            .filter(|e| e.engine == EngineKind::Swarm)
            .cloned()
    }

    /// After planning a swarm environment: steps whose image the registry
    /// holds become reuses, and those images are pulled so the build step
    /// (and `FROM` lines of images still to build) find them. Other
    /// environments' plans pass through.
    pub(super) async fn swarm_images(
        &self,
        ctx: &Arc<JobCtx>,
        plan: Plan,
    ) -> Result<Plan, StepError> {
        let Some(env) = self.swarm_env(&ctx.env) else {
            return Ok(plan);
        };
        let err = |e: &dyn std::fmt::Display| StepError::new("plan", e.to_string());
        let plan = self
            .inner
            .marvin
            .reuse_from_registry(&env, plan)
            .await
            .map_err(|e| err(&e))?;
        let auth = RegistryAuth::from_env(env.registry.as_deref().unwrap_or_default())
            .map_err(|e| err(&e))?;
        let engine = &self.inner.engine;
        let swarm = swarm_of(engine.as_ref()).map_err(|e| err(&e))?;
        for step in plan
            .builds
            .iter()
            .filter(|b| b.reason == BuildReason::InRegistry)
        {
            if engine
                .image_exists(&step.image)
                .await
                .map_err(|e| err(&e))?
            {
                continue;
            }
            ctx.log(
                "marvin",
                &format!(
                    "{}: pulling {} (its key is in the registry; not rebuilt)",
                    step.service, step.image
                ),
            );
            swarm
                .pull_image(&step.image, auth.as_ref())
                .await
                .map_err(|e| err(&format!("{}: {e}", step.service)))?;
        }
        Ok(plan)
    }

    /// Carry out the deploy part of a plan on a swarm: push, hooks, services
    /// in `depends_on` waves, removals, history.
    pub(super) async fn swarm_deploy(
        &self,
        ctx: &Arc<JobCtx>,
        env: &Environment,
        desired: &[DesiredContainer],
        plan: &Plan,
        commits: &[Commit],
    ) -> Result<(), StepError> {
        let project = &self.inner.marvin.project;
        let engine = &self.inner.engine;
        let deploy_err = |e: EngineError| StepError::new("deploy", e.to_string());
        let swarm = swarm_of(engine.as_ref()).map_err(deploy_err)?;
        swarm.swarm_manager().await.map_err(deploy_err)?;
        let registry = env.registry.as_deref().unwrap_or_default();
        let auth = RegistryAuth::from_env(registry).map_err(deploy_err)?;
        let env_labels = BTreeMap::from([
            (LABEL_PROJECT.to_string(), project.name.clone()),
            (LABEL_ENV.to_string(), env.name.clone()),
        ]);
        let action_of: BTreeMap<&str, DeployAction> = plan
            .deploy
            .iter()
            .map(|d| (d.service.as_str(), d.action))
            .collect();
        let changing = |service: &str| {
            matches!(
                action_of.get(service),
                Some(DeployAction::Create | DeployAction::Recreate)
            )
        };

        // Every node pulls from the registry: what changes must be there first.
        let to_push: BTreeSet<&str> = desired
            .iter()
            .filter(|d| d.build_key.is_some() && changing(&d.service))
            .map(|d| d.spec.image.as_str())
            .collect();
        if !to_push.is_empty() {
            ctx.step("push");
            for tag in to_push {
                if swarm
                    .registry_has(tag, auth.as_ref())
                    .await
                    .map_err(deploy_err)?
                {
                    ctx.log("push", &format!("{tag} is in the registry already"));
                    continue;
                }
                ctx.log("push", &format!("pushing {tag}"));
                let log_ctx = Arc::clone(ctx);
                let log = move |line: &str| log_ctx.log("push", line);
                swarm
                    .push_image(tag, auth.as_ref(), &log)
                    .await
                    .map_err(deploy_err)?;
            }
        }

        // Hooks' one-off containers join the overlay network too (it is attachable).
        let network = crate::desired::network_name(&project.name, &env.name);
        swarm
            .ensure_overlay_network(&network, &env_labels)
            .await
            .map_err(deploy_err)?;
        let any_change = plan.deploy.iter().any(|d| d.action != DeployAction::Keep);
        if any_change && !env.hooks.before_deploy.is_empty() {
            ctx.step("before_deploy");
            for task in &env.hooks.before_deploy {
                self.hook(ctx, task, "before_deploy", desired).await?;
            }
        }

        ctx.step("deploy");
        ctx.deploying.store(true, Ordering::SeqCst);
        let by_service: BTreeMap<&str, &DesiredContainer> =
            desired.iter().map(|d| (d.service.as_str(), d)).collect();
        // A rollback has time for the update, then for Swarm's rollback.
        let timeout = project.settings.health_timeout * 2;
        for (i, wave) in plan.waves.iter().enumerate() {
            let work: Vec<_> = wave
                .iter()
                .filter(|s| changing(s))
                .filter_map(|s| by_service.get(s.as_str()))
                .map(|d| {
                    let action = action_of[d.service.as_str()];
                    self.swarm_rollout(ctx, swarm, d, action, auth.as_ref(), timeout)
                })
                .collect();
            let failures: Vec<StepError> = join_all(work)
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect();
            if let Some(first) = failures.into_iter().next() {
                return Err(first);
            }
            if i + 1 < plan.waves.len() {
                ctx.check_cancel()?;
            }
        }
        for d in plan
            .deploy
            .iter()
            .filter(|d| d.action == DeployAction::Remove)
        {
            let name = crate::desired::container_name(&project.name, &env.name, &d.service);
            ctx.log(
                "deploy",
                &format!(
                    "removing service {name} ({} is no longer in the compose file)",
                    d.service
                ),
            );
            swarm.remove_service(&name).await.map_err(deploy_err)?;
            ctx.summary().removed.push(d.service.clone());
            ctx.emit(EventKind::Container {
                service: d.service.clone(),
                action: "remove".into(),
            });
        }
        {
            let mut s = ctx.summary();
            for d in plan
                .deploy
                .iter()
                .filter(|d| d.action == DeployAction::Keep)
            {
                s.unchanged.push(d.service.clone());
            }
        }
        if any_change && !env.hooks.after_deploy.is_empty() {
            ctx.step("after_deploy");
            for task in &env.hooks.after_deploy {
                self.hook(ctx, task, "after_deploy", desired).await?;
            }
        }
        self.record_deployment(ctx, desired, plan, commits)
    }

    /// Create or update one service and watch it until every replica runs
    /// its new deploy key; a failed update is rolled back by Swarm and
    /// reported with the failed task's reason.
    async fn swarm_rollout(
        &self,
        ctx: &Arc<JobCtx>,
        swarm: &dyn SwarmEngine,
        d: &DesiredContainer,
        action: DeployAction,
        auth: Option<&RegistryAuth>,
        timeout: Duration,
    ) -> Result<(), StepError> {
        let spec = crate::swarm::service_spec(d);
        let fail = |e: EngineError| StepError::new("deploy", format!("{}: {e}", d.service));
        let existing = swarm.inspect_service(&spec.name).await.map_err(fail)?;
        let replicas = match spec.replicas {
            1 => "1 replica".to_string(),
            n => format!("{n} replicas"),
        };
        let (id, update_before, created) = match &existing {
            None => {
                ctx.log(
                    "deploy",
                    &format!(
                        "creating service {} ({}, {replicas})",
                        spec.name, spec.container.image
                    ),
                );
                let id = swarm.create_service(&spec, auth).await.map_err(fail)?;
                (id, None, true)
            }
            Some(s) => {
                ctx.log(
                    "deploy",
                    &format!(
                        "updating service {} ({}, {replicas})",
                        spec.name, spec.container.image
                    ),
                );
                swarm
                    .update_service(&s.id, s.version, &spec, auth)
                    .await
                    .map_err(fail)?;
                (s.id.clone(), s.update_started.clone(), false)
            }
        };
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            tokio::time::sleep(ROLLOUT_POLL).await;
            let service = swarm
                .inspect_service(&spec.name)
                .await
                .map_err(fail)?
                .ok_or_else(|| {
                    StepError::new(
                        "deploy",
                        format!("service {} disappeared during its rollout", spec.name),
                    )
                })?;
            let tasks = swarm.service_tasks(&id).await.map_err(fail)?;
            match crate::swarm::rollout(
                &service,
                &tasks,
                &d.deploy_key,
                spec.replicas,
                update_before.as_deref(),
                created,
            ) {
                Rollout::Done => break,
                Rollout::RolledBack { reason } => {
                    ctx.log(
                        "deploy",
                        &format!("swarm rolled {} back: {reason}", spec.name),
                    );
                    ctx.summary().rolled_back.push(d.service.clone());
                    ctx.emit(EventKind::Container {
                        service: d.service.clone(),
                        action: "rolled-back".into(),
                    });
                    return Err(StepError {
                        step: "deploy".into(),
                        message: format!("swarm rolled back {}: {reason}", d.service),
                        last_lines: ctx.last_lines(),
                    });
                }
                Rollout::Failed { reason } => {
                    return Err(self.swarm_failed(ctx, swarm, d, &id, created, reason).await);
                }
                Rollout::Waiting(what) => {
                    if what != last {
                        ctx.log("deploy", &format!("{}: {what}", d.service));
                        last = what;
                    }
                    if Instant::now() > deadline {
                        let reason = format!("not done within {}s: {last}", timeout.as_secs());
                        return Err(self.swarm_failed(ctx, swarm, d, &id, created, reason).await);
                    }
                }
            }
        }
        {
            let mut s = ctx.summary();
            if action == DeployAction::Create {
                s.created.push(d.service.clone());
            } else {
                s.recreated.push(d.service.clone());
            }
        }
        ctx.emit(EventKind::Container {
            service: d.service.clone(),
            action: if action == DeployAction::Create {
                "create"
            } else {
                "recreate"
            }
            .into(),
        });
        Ok(())
    }

    /// A service that did not come up: a new one is removed (nothing to go
    /// back to, and Swarm would restart it forever); an updated one is left
    /// to Swarm.
    async fn swarm_failed(
        &self,
        ctx: &Arc<JobCtx>,
        swarm: &dyn SwarmEngine,
        d: &DesiredContainer,
        id: &str,
        created: bool,
        reason: String,
    ) -> StepError {
        let mut message = format!("{} did not come up: {reason}", d.service);
        if created {
            match swarm.remove_service(id).await {
                Ok(()) => message.push_str("; the new service was removed"),
                Err(e) => message.push_str(&format!("; removing the new service failed too: {e}")),
            }
        }
        ctx.log("deploy", &message);
        StepError {
            step: "deploy".into(),
            message,
            last_lines: ctx.last_lines(),
        }
    }
}
