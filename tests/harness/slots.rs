//! A canary target's test bed: a compose deployment whose file runs as two slot projects,
//! `live` running in the blue one at weight 100 behind a real HAProxy, green empty at weight
//! 0. The slot containers carry the app's label, so the deployment's drop removes them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rollwatch::canary::slots::SlotSite;
use rollwatch::rollback::{CommandRunner, LocalRunner};
use rollwatch::traffic::Slot;

use super::haproxy::Haproxy;
use super::{app_with_images, free_port, wait_healthy_version, ComposeDeployment, REGISTRY};

pub struct SlotBed {
    pub d: ComposeDeployment,
    pub site: SlotSite,
    pub h: Haproxy,
}

pub fn runner() -> Arc<dyn CommandRunner> {
    Arc::new(LocalRunner::new(Duration::from_secs(120)))
}

impl SlotBed {
    /// `live` in the blue slot (and every tag of `tags` pushed for the app).
    pub async fn start(prefix: &str, live: &str, tags: &[&str]) -> SlotBed {
        let app = app_with_images(prefix, &[&[live], tags].concat());
        let d = ComposeDeployment::up(&app, "staging", "backend", live);
        d.compose(&["down"]);
        let site = SlotSite {
            dir: d.dir(),
            project: d.project.clone(),
            env_file: ".env".into(),
            registry: format!("{REGISTRY}/{app}"),
            compose: vec!["docker-compose".into()],
            port_var: "APP_PORT".into(),
            ports: [free_port(), free_port()],
        };
        site.start(&runner(), Slot::Blue, live)
            .await
            .expect("blue slot");
        wait_healthy_version(site.port_of(Slot::Blue), live);
        let h = Haproxy::start(&[
            ("blue", site.port_of(Slot::Blue), 100),
            ("green", site.port_of(Slot::Green), 0),
        ]);
        h.wait_server_up("blue", Duration::from_secs(10));
        SlotBed { d, site, h }
    }

    /// A `rollwatch run` config for the bed as a canary target: `watch` (a TOML line) and the
    /// `[targets.canary]` settings besides its ports and traffic; the health URL is HAProxy's
    /// frontend, where users reach the service.
    pub fn write_config(&self, watch: &str, canary: &str) -> PathBuf {
        let extra = format!(
            "strategy = \"canary\"\n{watch}\n[targets.canary]\nports = [{blue}, {green}]\n{canary}\ntraffic = {{ kind = \"haproxy\", socket = \"{socket}\", backend = \"be\", servers = [\"blue\", \"green\"] }}\n",
            blue = self.site.port_of(Slot::Blue),
            green = self.site.port_of(Slot::Green),
            socket = self.h.socket.display(),
        );
        let config = self.d.write_config(&self.site.registry, &extra);
        let text = std::fs::read_to_string(&config).expect("config").replace(
            &format!("127.0.0.1:{}/health", self.d.port),
            &format!("127.0.0.1:{}/health", self.h.port),
        );
        std::fs::write(&config, text).expect("config");
        config
    }
}
