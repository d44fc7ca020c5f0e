//! `leasehold plans`: the plans the server offers (base and maximum seats).

use clap::Args;

use super::output::{print_json, Table};
use super::{Admin, CmdResult, Common};

#[derive(Args, Debug)]
pub struct PlansArgs {
    #[command(flatten)]
    pub(super) common: Common,
}

impl Admin {
    pub(super) async fn plans(&self) -> CmdResult {
        let plans = self.client()?.list_plans().await?;
        if self.json() {
            print_json(&plans);
        } else if plans.is_empty() {
            println!("no plans configured");
        } else {
            let mut table = Table::new(&["PLAN", "BASE SEATS", "MAX SEATS"]);
            for plan in &plans {
                table.row(vec![
                    plan.name.clone(),
                    plan.base_seats.to_string(),
                    plan.max_seats.to_string(),
                ]);
            }
            print!("{}", table.render());
        }
        Ok(())
    }
}
