//! HAProxy as the traffic driver, through its Runtime API on the `stats socket`: weights and
//! states change without a reload, so no connection is dropped. One command line per
//! connection (HAProxy's non-interactive mode answers and closes); a line may hold several
//! commands separated by `;`, run in order.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{stat, Slot, SlotReading, SlotState, TrafficDriver, TrafficError};

/// How long one Runtime API exchange may take; the socket answers in about a millisecond.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest answer read (a `show stat` of a few hundred servers is far below).
const MAX_ANSWER: u64 = 4 * 1024 * 1024;

/// One target's backend: its name and the servers of its two slots.
#[derive(Debug, Clone)]
pub struct Haproxy {
    pub socket: PathBuf,
    pub backend: String,
    /// The server names of the blue and the green slot.
    pub servers: [String; 2],
}

impl Haproxy {
    fn server(&self, slot: Slot) -> &str {
        match slot {
            Slot::Blue => &self.servers[0],
            Slot::Green => &self.servers[1],
        }
    }

    /// Sends one command line and reads the whole answer.
    pub async fn command(&self, line: &str) -> Result<String, TrafficError> {
        let socket = self.socket.display().to_string();
        let exchange = async {
            let mut s = UnixStream::connect(&self.socket).await.map_err(|source| {
                TrafficError::Connect {
                    socket: socket.clone(),
                    source,
                }
            })?;
            let io = |source| TrafficError::Connect {
                socket: socket.clone(),
                source,
            };
            s.write_all(format!("{line}\n").as_bytes())
                .await
                .map_err(io)?;
            let mut answer = String::new();
            (&mut s)
                .take(MAX_ANSWER)
                .read_to_string(&mut answer)
                .await
                .map_err(io)?;
            Ok(answer)
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .map_err(|_| TrafficError::Timeout {
                socket: socket.clone(),
                command: line.to_string(),
                within: EXCHANGE_TIMEOUT,
            })?
    }

    /// Runs `set` commands in one line; each success answers an empty line, so any text in
    /// the answer is a refusal (`No such server.`, `Require 'operator' level.`).
    async fn set(&self, commands: Vec<String>) -> Result<(), TrafficError> {
        let line = commands.join("; ");
        let answer = self.command(&line).await?;
        let said = answer.trim();
        if said.is_empty() {
            Ok(())
        } else {
            Err(TrafficError::Refused {
                command: line,
                answer: said.to_string(),
            })
        }
    }
}

impl TrafficDriver for Haproxy {
    /// In the order given: an abort names the slot taking traffic back first, so no moment
    /// has both slots at weight 0.
    async fn set_weights(&self, weights: &[(Slot, u32)]) -> Result<(), TrafficError> {
        let commands = weights
            .iter()
            .map(|(slot, w)| {
                format!(
                    "set server {}/{} weight {w}",
                    self.backend,
                    self.server(*slot)
                )
            })
            .collect();
        self.set(commands).await
    }

    async fn set_state(&self, slot: Slot, state: SlotState) -> Result<(), TrafficError> {
        let command = format!(
            "set server {}/{} state {}",
            self.backend,
            self.server(slot),
            state.as_str()
        );
        self.set(vec![command]).await
    }

    async fn read(&self) -> Result<[SlotReading; 2], TrafficError> {
        let text = self.command("show stat").await?;
        let servers = stat::parse(&text).map_err(TrafficError::Stats)?;
        if !servers.iter().any(|s| s.proxy == self.backend) {
            let mut known: Vec<&str> = servers.iter().map(|s| s.proxy.as_str()).collect();
            known.dedup();
            return Err(TrafficError::UnknownBackend {
                backend: self.backend.clone(),
                known: known.join(", "),
            });
        }
        let mut out = Vec::with_capacity(2);
        for slot in [Slot::Blue, Slot::Green] {
            let name = self.server(slot);
            let s = servers
                .iter()
                .find(|s| s.proxy == self.backend && s.server == name)
                .ok_or_else(|| TrafficError::UnknownServer {
                    backend: self.backend.clone(),
                    server: name.to_string(),
                })?;
            out.push(SlotReading {
                slot,
                weight: s.weight,
                status: s.status.clone(),
                responses_2xx: s.hrsp[1],
                responses_5xx: s.hrsp[4],
                responses: s.responses(),
                errors: s.eresp + s.econ,
                avg_response_ms: s.rtime_ms,
            });
        }
        let green = out.pop();
        let blue = out.pop();
        match (blue, green) {
            (Some(b), Some(g)) => Ok([b, g]),
            _ => Err(TrafficError::Stats("two slots expected".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::net::UnixListener;

    use super::*;

    /// A fake runtime socket: records each command line and answers with `answer(line)`.
    fn fake(answer: fn(&str) -> String) -> (Haproxy, Arc<Mutex<Vec<String>>>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("haproxy.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n]).trim_end().to_string();
                log.lock().unwrap().push(line.clone());
                let _ = s.write_all(answer(&line).as_bytes()).await;
            }
        });
        let h = Haproxy {
            socket,
            backend: "be".into(),
            servers: ["app-blue".into(), "app-green".into()],
        };
        (h, seen, dir)
    }

    #[tokio::test]
    async fn a_weight_change_is_one_line_in_the_order_given() {
        let (h, seen, _d) = fake(|_| "\n\n".into());
        h.set_weights(&[(Slot::Blue, 100), (Slot::Green, 0)])
            .await
            .unwrap();
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            ["set server be/app-blue weight 100; set server be/app-green weight 0"]
        );
    }

    #[tokio::test]
    async fn any_text_in_a_set_answer_is_a_refusal_naming_the_command() {
        let (h, _, _d) = fake(|_| "No such server.\n\n".into());
        let e = h
            .set_state(Slot::Green, SlotState::Maint)
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("set server be/app-green state maint")
                && text.contains("No such server."),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_reading_takes_counters_and_the_weight_in_effect_from_one_show_stat() {
        let (h, seen, _d) = fake(|line| {
            if line == "show stat" {
                let mut head = vec![
                    "pxname", "svname", "status", "weight", "uweight", "hrsp_1xx", "hrsp_2xx",
                ];
                head.extend([
                    "hrsp_3xx",
                    "hrsp_4xx",
                    "hrsp_5xx",
                    "hrsp_other",
                    "eresp",
                    "econ",
                    "rtime",
                ]);
                // In MAINT the weight column is stale (1); uweight is the weight in effect.
                format!(
                    "# {}\nbe,app-blue,UP,1,7,0,90,0,0,0,0,0,0,2\nbe,app-green,MAINT,1,0,0,8,0,0,2,0,1,0,5\n\n",
                    head.join(",")
                )
            } else {
                "Unknown command.\n".into()
            }
        });
        let [blue, green] = h.read().await.unwrap();
        assert_eq!(
            (blue.weight, blue.responses_2xx, blue.avg_response_ms),
            (7, 90, 2)
        );
        assert_eq!((green.weight, green.status.as_str()), (0, "MAINT"));
        assert_eq!(
            (green.responses, green.responses_5xx, green.errors),
            (10, 2, 1)
        );
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            ["show stat"],
            "one exchange"
        );
    }

    #[tokio::test]
    async fn a_backend_without_the_slot_server_is_named() {
        let (h, _, _d) = fake(|_| {
            "# pxname,svname,status,weight,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,eresp,econ,rtime\nbe,other,UP,1,0,0,0,0,0,0,0,0,0\n".into()
        });
        let e = h.read().await.unwrap_err().to_string();
        assert!(e.contains("backend be has no server app-blue"), "{e}");
    }

    #[tokio::test]
    async fn no_socket_says_which_and_how_to_enable_it() {
        let h = Haproxy {
            socket: "/nonexistent/haproxy.sock".into(),
            backend: "be".into(),
            servers: ["a".into(), "b".into()],
        };
        let e = h.read().await.unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/haproxy.sock") && e.contains("level admin"),
            "{e}"
        );
    }
}
