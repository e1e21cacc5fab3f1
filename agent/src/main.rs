//! The `routelet` binary: subcommands `speaker` (standalone BGP daemon), `agent` (the
//! Kubernetes node agent), `status` and `lab`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use agent::{agent_config, allocator, config, control, controller, k8s, lab, speaker_cmd};

#[derive(Parser)]
#[command(
    name = "routelet",
    version,
    about = "Kubernetes node networking agent: BGP speaker, routes, status"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `bgp=debug`.
    #[arg(long, env = "ROUTELET_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a standalone BGP speaker from a YAML config file (no Kubernetes).
    Speaker {
        #[arg(long, short)]
        config: PathBuf,
        /// Only validate the config file and exit.
        #[arg(long)]
        check: bool,
    },
    /// Run the node agent: routes from the Kubernetes API (one per node, a DaemonSet).
    Agent {
        /// Agent configuration (YAML; a ConfigMap in a cluster).
        #[arg(
            long,
            short,
            env = "ROUTELET_CONFIG",
            default_value = "/etc/routelet/agent.yaml"
        )]
        config: PathBuf,
        /// kubeconfig file; default: in-cluster service account, else KUBECONFIG / ~/.kube/config.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// This node's name (the downward API's spec.nodeName in a pod).
        #[arg(long, env = "NODE_NAME")]
        node_name: String,
        /// Only validate the config file and exit.
        #[arg(long)]
        check: bool,
    },
    /// Show neighbors and routes of a running speaker or agent.
    Status {
        #[arg(long, default_value = config::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the full status as JSON.
        #[arg(long)]
        json: bool,
        /// Leave out the route table (cheap with large tables; `rib_size` still counts it).
        #[arg(long)]
        summary: bool,
    },
    /// Pieces of a cluster on one machine, for tests.
    #[command(subcommand)]
    Lab(Lab),
    /// CNI plugin (as the container runtime runs it: CNI_* env + network config on stdin)
    Cni,
}

#[derive(Subcommand)]
enum Lab {
    /// Kubernetes API stand-in (plain HTTP, no auth) for the resources routelet uses.
    Apiserver {
        /// Address and port to serve plain HTTP on, e.g. 127.0.0.1:6443.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Keep the objects in this file (loaded at start, rewritten after each change).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Build a whole cluster in network namespaces (racks, ToR, API, agents, pods, a LoadBalancer).
    Up {
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        #[arg(long, default_value_t = 2)]
        racks: usize,
        #[arg(long, value_enum, default_value_t = lab::topology::Backend::Bgp)]
        backend: lab::topology::Backend,
        #[arg(long, value_enum, default_value_t = lab::topology::Tor::Routelet)]
        tor: lab::topology::Tor,
        /// What agents do for nodes on another rack: tunnel (vxlan) or leave it to the ToR.
        #[arg(long, value_enum, default_value_t = lab::topology::CrossSubnet::Vxlan)]
        cross_subnet: lab::topology::CrossSubnet,
        /// BGP hold time (s) of every node-ToR and node-node session.
        #[arg(long, default_value_t = lab::topology::DEFAULT_HOLD_TIME)]
        hold_time: u16,
        /// BFD (300 ms x 3) on every node-ToR and node-node session (routelet ToR only).
        #[arg(long)]
        bfd: bool,
        /// Use this API server instead of starting the stand-in.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        #[arg(long, default_value = lab::up::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Namespace name prefix.
        #[arg(long, default_value = lab::up::DEFAULT_PREFIX)]
        prefix: String,
    },
    /// Probe every pod pair, node->pod and external->LoadBalancer; exit 1 if any fails.
    Check {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = lab::up::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Remove every namespace, process and file of the lab (idempotent).
    Down {
        #[arg(long, default_value = lab::up::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Namespace prefix when the state dir is gone (default: the one recorded, else rl-lab).
        #[arg(long)]
        prefix: Option<String>,
    },
    /// The lab's process supervisor (started by `lab up`).
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        state_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    // Installed as (or linked to) `routelet-cni`, the runtime runs us as a CNI plugin.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new("routelet-cni")) {
        return agent::cni::main();
    }
    let tuning = allocator::tune();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tracing::debug!(?tuning, "malloc tuning");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("routelet: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Speaker { config, check } => {
            let settings = match config::load_speaker(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("routelet: config error: {e}");
                    return ExitCode::from(2);
                }
            };
            if check {
                println!("{}: ok", config.display());
                return ExitCode::SUCCESS;
            }
            match rt.block_on(speaker_cmd::run(settings, &config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("routelet: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Agent {
            config,
            kubeconfig,
            node_name,
            check,
        } => {
            let settings = match agent_config::load_agent(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("routelet: config error: {e}");
                    return ExitCode::from(2);
                }
            };
            if check {
                println!("{}: ok", config.display());
                return ExitCode::SUCCESS;
            }
            if node_name.is_empty() {
                eprintln!("routelet: --node-name (or NODE_NAME) is empty");
                return ExitCode::from(2);
            }
            let result = rt.block_on(async {
                let client = k8s::client::client(kubeconfig.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                controller::run::run(settings, node_name, client)
                    .await
                    .map_err(|e| e.to_string())
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("routelet: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status {
            socket,
            json,
            summary,
        } => match rt.block_on(control::fetch_status(&socket, summary)) {
            Ok(status) => {
                if json {
                    match serde_json::to_string_pretty(&status) {
                        Ok(s) => println!("{s}"),
                        Err(e) => {
                            eprintln!("routelet: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                } else {
                    print!("{}", status.render_table());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("routelet: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Lab(Lab::Up {
            nodes,
            racks,
            backend,
            tor,
            cross_subnet,
            hold_time,
            bfd,
            kubeconfig,
            state_dir,
            prefix,
        }) => lab_exit(lab::up::run(&lab::up::UpOptions {
            nodes,
            racks,
            backend,
            tor,
            cross_subnet,
            hold_time,
            bfd,
            kubeconfig,
            state_dir,
            prefix,
        })),
        Command::Lab(Lab::Check { json, state_dir }) => match lab::check::run(&state_dir, json) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => lab_exit(Err(e)),
        },
        Command::Lab(Lab::Down { state_dir, prefix }) => {
            lab_exit(lab::down::run(&state_dir, prefix.as_deref()))
        }
        Command::Lab(Lab::Supervise { state_dir }) => lab_exit(lab::supervise::run(&state_dir)),
        Command::Cni => agent::cni::main(),
        Command::Lab(Lab::Apiserver { listen, data }) => {
            let mut opts = lab::apiserver::Options::new(listen);
            opts.data = data;
            match rt.block_on(lab::apiserver::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("routelet: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn lab_exit(r: Result<(), lab::error::LabError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("routelet lab: {e}");
            ExitCode::FAILURE
        }
    }
}
