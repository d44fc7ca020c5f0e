//! `leasehold device`: activate, list and deactivate the devices of a `node_locked` license.

use clap::{Args, Subcommand};
use leasehold_client::proto::Device;

use super::output::{dash_if_empty, key_values, print_json, time, Table};
use super::{Admin, CmdResult, Common};

#[derive(Args, Debug)]
pub struct DeviceArgs {
    #[command(flatten)]
    pub(super) common: Common,
    #[command(subcommand)]
    command: DeviceCommand,
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// Activate a device on a node_locked license.
    ///
    /// Fails with activations_exhausted when all activations are taken; activating a device
    /// that already is changes nothing (not even its name).
    Activate {
        /// License id.
        #[arg(long)]
        license: String,
        /// The device's fingerprint (the device_id its sessions give).
        fingerprint: String,
        /// A name to recognize the device by.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List the devices activated on a license.
    List {
        /// License id.
        #[arg(long)]
        license: String,
    },
    /// Deactivate a device: frees its activation and ends its live sessions.
    Deactivate {
        /// License id.
        #[arg(long)]
        license: String,
        /// The device's fingerprint.
        fingerprint: String,
    },
}

impl Admin {
    pub(super) async fn device_command(&self, args: DeviceArgs) -> CmdResult {
        let client = self.client()?;
        match args.command {
            DeviceCommand::Activate {
                license,
                fingerprint,
                name,
            } => {
                let activation = client
                    .activate_device(&license, &fingerprint, &name)
                    .await?;
                self.print_device(&activation.device);
                if !activation.created {
                    eprintln!("note: the device was already activated: nothing changed.");
                }
            }
            DeviceCommand::List { license } => {
                let list = client.list_devices(&license).await?;
                if self.json() {
                    print_json(&list);
                    return Ok(());
                }
                if !list.devices.is_empty() {
                    let mut table = Table::new(&["FINGERPRINT", "NAME", "ACTIVATED"]);
                    for device in &list.devices {
                        table.row(vec![
                            device.fingerprint.clone(),
                            dash_if_empty(&device.name),
                            time(device.activated_at),
                        ]);
                    }
                    print!("{}", table.render());
                }
                println!(
                    "{} of {} devices activated",
                    list.devices.len(),
                    list.max_devices
                );
            }
            DeviceCommand::Deactivate {
                license,
                fingerprint,
            } => {
                // Count the sessions the deactivation ends (the DELETE answers no body).
                let live = client.list_sessions(&license).await?;
                let ended: Vec<String> = live
                    .sessions
                    .into_iter()
                    .filter(|s| s.device_id == fingerprint)
                    .map(|s| s.id)
                    .collect();
                client.deactivate_device(&license, &fingerprint).await?;
                if self.json() {
                    print_json(&serde_json::json!({
                        "license_id": license,
                        "fingerprint": fingerprint,
                        "deactivated": true,
                        "ended_sessions": ended,
                    }));
                } else {
                    println!("{fingerprint} is now deactivated on license {license}");
                    if !ended.is_empty() {
                        println!("{} live session(s) ended", ended.len());
                    }
                }
            }
        }
        Ok(())
    }

    fn print_device(&self, device: &Device) {
        if self.json() {
            print_json(device);
            return;
        }
        print!(
            "{}",
            key_values(&[
                ("license", device.license_id.clone()),
                ("fingerprint", device.fingerprint.clone()),
                ("name", dash_if_empty(&device.name)),
                ("activated_at", time(device.activated_at)),
            ])
        );
    }
}
