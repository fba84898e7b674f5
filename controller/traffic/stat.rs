//! HAProxy's `show stat` CSV, read by column name (the column set grows between versions; the
//! names stay). Only what judging a slot needs is kept.

/// One server line of `show stat`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerStat {
    pub proxy: String,
    pub server: String,
    pub status: String,
    /// The weight in effect: `uweight` where the version has it. The `weight` column keeps the
    /// weight from before maintenance while a server is in MAINT (seen on 2.6).
    pub weight: u32,
    pub hrsp: [u64; 6],
    pub eresp: u64,
    pub econ: u64,
    pub rtime_ms: u64,
}

impl ServerStat {
    pub fn responses(&self) -> u64 {
        self.hrsp.iter().sum()
    }
}

/// The server lines (not FRONTEND/BACKEND totals) of a `show stat` answer.
pub fn parse(text: &str) -> Result<Vec<ServerStat>, String> {
    let mut lines = text.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| format!("no `# pxname,...` header in {:?}", first_line(text)))?;
    let names: Vec<&str> = header.split(',').collect();
    let col = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| format!("no column {name} in the header"))
    };
    let (px, sv, status) = (col("pxname")?, col("svname")?, col("status")?);
    let weight = col("uweight").or_else(|_| col("weight"))?;
    let hrsp = [
        col("hrsp_1xx")?,
        col("hrsp_2xx")?,
        col("hrsp_3xx")?,
        col("hrsp_4xx")?,
        col("hrsp_5xx")?,
        col("hrsp_other")?,
    ];
    let (eresp, econ, rtime) = (col("eresp")?, col("econ")?, col("rtime")?);
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let get = |c: usize| f.get(c).copied().unwrap_or("");
        if matches!(get(sv), "FRONTEND" | "BACKEND") {
            continue;
        }
        // Empty counters are 0 (HAProxy leaves columns empty where they do not apply).
        let num = |c: usize| -> Result<u64, String> {
            let v = get(c);
            if v.is_empty() {
                return Ok(0);
            }
            v.parse()
                .map_err(|_| format!("line {}: column {} is {v:?}, not a number", i + 2, names[c]))
        };
        let mut h = [0u64; 6];
        for (slot, &c) in h.iter_mut().zip(&hrsp) {
            *slot = num(c)?;
        }
        out.push(ServerStat {
            proxy: get(px).to_string(),
            server: get(sv).to_string(),
            status: get(status).to_string(),
            weight: u32::try_from(num(weight)?).unwrap_or(u32::MAX),
            hrsp: h,
            eresp: num(eresp)?,
            econ: num(econ)?,
            rtime_ms: num(rtime)?,
        });
    }
    Ok(out)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime";

    fn row(
        px: &str,
        sv: &str,
        status: &str,
        weight: &str,
        h2: &str,
        h5: &str,
        econ: &str,
    ) -> String {
        // 62 columns in the header above; fill by index.
        let mut f = vec![""; 62];
        f[0] = px;
        f[1] = sv;
        f[13] = econ;
        f[14] = "1";
        f[17] = status;
        f[18] = weight;
        f[40] = h2;
        f[43] = h5;
        f[60] = "3";
        f.join(",")
    }

    #[test]
    fn server_lines_are_read_by_column_name_and_totals_skipped() {
        let text = format!(
            "{HEADER}\n{}\n{}\n{}\n{}\n\n",
            row("fe", "FRONTEND", "OPEN", "", "300", "0", ""),
            row("be", "blue", "UP", "10", "190", "0", "0"),
            row("be", "green", "DOWN 1/2", "1", "15", "5", ""),
            row("be", "BACKEND", "UP", "11", "205", "5", "0"),
        );
        let s = parse(&text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].server.as_str(), s[0].weight, s[0].hrsp[1]),
            ("blue", 10, 190)
        );
        assert_eq!(s[1].status, "DOWN 1/2");
        assert_eq!(
            (s[1].hrsp[4], s[1].responses(), s[1].econ, s[1].eresp),
            (5, 20, 0, 1)
        );
        assert_eq!(s[1].rtime_ms, 3);
    }

    #[test]
    fn the_weight_in_effect_is_uweight_where_the_version_has_it() {
        let text = "# pxname,svname,status,weight,uweight,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,eresp,econ,rtime\nbe,green,MAINT,10,5,0,0,0,0,0,0,0,0,0\n";
        assert_eq!(parse(text).unwrap()[0].weight, 5);
    }

    #[test]
    fn a_missing_header_or_column_or_a_bad_number_is_named() {
        assert!(parse("Unknown command").unwrap_err().contains("header"));
        assert!(parse("# pxname,svname\n")
            .unwrap_err()
            .contains("no column status"));
        let bad = format!("{HEADER}\n{}", row("be", "blue", "UP", "x", "1", "0", "0"));
        assert!(parse(&bad).unwrap_err().contains("column weight is \"x\""));
    }
}
