//! The trusted-services catalogue and the `[trusted_services]` section.
//!
//! Key Vault lets "trusted Microsoft services" through its firewall when
//! `bypass = AzureServices`. Azure recognises them by their identity; a host
//! firewall can only recognise them by source address, so each service is
//! mapped here to the Azure service tag(s) whose prefixes stand for its
//! sources, and the prefixes come from a service-tags file in Microsoft's
//! `ServiceTags_*.json` format ([`service_tags`](super::service_tags)).
//!
//! Sources:
//! - the ten services are those of the "Trusted services" section of Key
//!   Vault's network-security documentation ("Virtual network service
//!   endpoints for Azure Key Vault", learn.microsoft.com/azure/key-vault/
//!   general/overview-vnet-service-endpoints), in its order;
//! - the tags are those of "Azure IP Ranges and Service Tags – Public Cloud"
//!   (the weekly `ServiceTags_Public_*.json` download) as described in
//!   "Virtual network service tags" (learn.microsoft.com/azure/
//!   virtual-network/service-tags-overview); every tag named below is
//!   present in `tests/fixtures/ServiceTags_Public_subset.json` (change 301).
//!
//! Where no tag is dedicated to a service, the choice is documented on the
//! entry. `AzureCloud` (every public address of Azure) is never used: it
//! holds every Azure customer's virtual machines too, which would turn the
//! bypass into "anyone who rents a VM in Azure".

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::error::{PolicyError, PolicyWarning};
use super::model::{Bypass, TrustedPrefix, TrustedPrefix6, TrustedService, TrustedServices};
use super::raw::{Keys, RawTrusted};
use super::raw_value::Field;
use super::service_tags::{self, ServiceTagsError, ServiceTagsFile};

/// The built-in catalogue, in the order of Key Vault's documentation. That
/// order decides which service a network held by several is attributed to.
static CATALOGUE: [TrustedService; 10] = [
    // No dedicated tag. With `enabledForDeployment`, the Microsoft.Compute
    // resource provider reads certificates from the vault to install them
    // on a VM it deploys; it is reached through, and sends from, Azure
    // Resource Manager's platform addresses, so `AzureResourceManager` is
    // the narrowest published tag that carries it.
    TrustedService {
        name: "VirtualMachines",
        description: "Azure Virtual Machines deployment service: deploys certificates stored \
                      as secrets to virtual machines",
        tags: &["AzureResourceManager"],
    },
    // Dedicated tag: `AzureResourceManager`.
    TrustedService {
        name: "ResourceManager",
        description: "Azure Resource Manager template deployment service: passes secure \
                      values during a template deployment",
        tags: &["AzureResourceManager"],
    },
    // No dedicated tag. With `enabledForDiskEncryption`, the compute
    // platform unwraps BitLocker/DM-Crypt keys for a VM's disks on its
    // behalf, like the deployment service above: `AzureResourceManager`,
    // for the same reason.
    TrustedService {
        name: "DiskEncryption",
        description: "Azure Disk Encryption volume encryption service: reads BitLocker and \
                      DM-Crypt passphrases and unwraps keys for VM disks",
        tags: &["AzureResourceManager"],
    },
    // Dedicated tag: `AzureBackup`.
    TrustedService {
        name: "AzureBackup",
        description: "Azure Backup: backs up and restores the keys and secrets of a virtual \
                      machine",
        tags: &["AzureBackup"],
    },
    // No tag. Exchange Online and SharePoint Online are Microsoft 365
    // services: Microsoft publishes their addresses in the Microsoft 365
    // IP address and URL web service (endpoints.office.com), not in the
    // Azure service tags. The entry admits nothing from a tags file; an
    // operator who needs it adds Microsoft 365's published ranges as IP
    // rules (a warning says so when it is enabled by name).
    TrustedService {
        name: "ExchangeSharePoint",
        description: "Exchange Online & SharePoint Online: customer keys for Microsoft 365 \
                      Customer Key (addresses published by Microsoft 365, not in service tags)",
        tags: &[],
    },
    // Dedicated tag: `AzureInformationProtection`.
    TrustedService {
        name: "InformationProtection",
        description: "Azure Information Protection: tenant keys for Azure Information \
                      Protection",
        tags: &["AzureInformationProtection"],
    },
    // Dedicated tag: `AppService`.
    TrustedService {
        name: "AppService",
        description: "Azure App Service: deploys Web App certificates from the vault",
        tags: &["AppService"],
    },
    // Dedicated tag: `Sql`.
    TrustedService {
        name: "Sql",
        description: "Azure SQL Database: Transparent Data Encryption with customer-managed \
                      keys (also Azure Synapse Analytics)",
        tags: &["Sql"],
    },
    // Dedicated tag: `Storage`.
    TrustedService {
        name: "Storage",
        description: "Azure Storage: Storage Service Encryption with customer-managed keys",
        tags: &["Storage"],
    },
    // Dedicated tag: `AzureDataLake` (Data Lake Store Gen1).
    TrustedService {
        name: "DataLakeStore",
        description: "Azure Data Lake Store: encryption of Data Lake Store data with a \
                      customer-managed key",
        tags: &["AzureDataLake"],
    },
];

/// The built-in catalogue of the ten trusted services Key Vault's
/// documentation lists, in that documentation's order (see the module
/// documentation for each mapping and its source).
pub fn catalogue() -> &'static [TrustedService] {
    &CATALOGUE
}

impl Default for TrustedServices {
    /// No tags file, the whole catalogue enabled, no prefixes.
    fn default() -> Self {
        TrustedServices {
            service_tags_file: None,
            enabled: CATALOGUE.iter().collect(),
            prefixes: Vec::new(),
            prefixes_v6: Vec::new(),
            ipv6_skipped: 0,
            change_number: None,
        }
    }
}

/// The catalogue entry named `name`, compared case-insensitively.
pub fn find(name: &str) -> Option<&'static TrustedService> {
    CATALOGUE.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// The catalogue names, comma-separated, for messages.
fn names() -> String {
    CATALOGUE
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many errors from one service-tags file are listed before the rest
/// are summarised: a wrong file can hold thousands.
const MAX_TAG_FILE_ERRORS: usize = 20;

/// Validates `[trusted_services]` and, when it names a service-tags file,
/// reads the file (relative paths against `base_dir`) and collects the
/// enabled services' prefixes. `bypass` is the validated setting, for the
/// warnings that concern it.
pub fn validate(
    field: &Field<RawTrusted>,
    keys: &Keys,
    bypass: Option<Bypass>,
    base_dir: &Path,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<TrustedServices> {
    let raw = match field {
        Field::Absent => {
            if bypass == Some(Bypass::AzureServices) {
                warnings.push(PolicyWarning::new(
                    &keys.bypass.path,
                    "trusted-services catalogue has no prefixes: no source matches it \
                     (no [trusted_services] service_tags_file is configured), so the \
                     AzureServices bypass admits nothing",
                ));
            }
            return Some(TrustedServices::default());
        }
        Field::Invalid => return None,
        Field::Given(raw) => raw,
    };
    let enabled = enabled(raw, errors, warnings);
    let file = raw
        .service_tags_file
        .as_ref()
        .and_then(|at| Some((resolve(&at.path, &at.value, base_dir, errors)?, at)));
    let tags = file
        .as_ref()
        .and_then(|(path, at)| read_tags(path, &at.value, &at.path, errors));
    let file = file.map(|(path, _)| path);
    let enabled = enabled?;

    let mut out = TrustedServices {
        service_tags_file: file,
        enabled,
        prefixes: Vec::new(),
        prefixes_v6: Vec::new(),
        ipv6_skipped: 0,
        change_number: None,
    };
    if let Some(tags) = &tags {
        let label = out
            .service_tags_file
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        fill(&mut out, tags, &label, warnings);
    } else if out.service_tags_file.is_some() {
        return None; // the file's errors are recorded
    }

    match bypass {
        Some(Bypass::None) => warnings.push(PolicyWarning::new(
            &raw.path,
            format!(
                "the catalogue is inactive while {}: its {} prefix{} are loaded but admit no \
                 source until the bypass is AzureServices",
                keys.bypass.assign("None"),
                out.prefixes.len(),
                if out.prefixes.len() == 1 { "" } else { "es" }
            ),
        )),
        Some(Bypass::AzureServices) if out.prefixes.is_empty() => {
            let why = if out.service_tags_file.is_none() {
                "no service_tags_file is configured".to_string()
            } else if out.enabled.is_empty() {
                "no service is enabled".to_string()
            } else {
                "the enabled services' tags hold no IPv4 prefix in the service-tags file"
                    .to_string()
            };
            warnings.push(PolicyWarning::new(
                &keys.bypass.path,
                format!(
                    "trusted-services catalogue has no prefixes: no source matches it ({why}), \
                     so the AzureServices bypass admits nothing"
                ),
            ));
        }
        _ => {}
    }
    Some(out)
}

/// `enabled`: catalogue names, case-insensitive, normalised to catalogue
/// order; absent means the whole catalogue.
fn enabled(
    raw: &RawTrusted,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<Vec<&'static TrustedService>> {
    let list = match &raw.enabled {
        Field::Absent => return Some(CATALOGUE.iter().collect()),
        Field::Invalid => return None,
        Field::Given(list) => list,
    };
    let mut chosen: BTreeMap<usize, &str> = BTreeMap::new();
    let mut ok = true;
    for at in list {
        let Some(index) = CATALOGUE
            .iter()
            .position(|s| s.name.eq_ignore_ascii_case(&at.value))
        else {
            ok = false;
            let near = CATALOGUE
                .iter()
                .map(|s| {
                    let d = strsim::levenshtein(
                        &at.value.to_ascii_lowercase(),
                        &s.name.to_ascii_lowercase(),
                    );
                    (d, s.name)
                })
                .filter(|(d, _)| *d <= 3)
                .min_by_key(|(d, _)| *d);
            let fix = match near {
                Some((_, name)) => format!(
                    "did you mean \"{name}\"? The trusted services are: {}",
                    names()
                ),
                None => format!("write one of the trusted services: {}", names()),
            };
            errors.push(PolicyError::new(
                &at.path,
                &at.value,
                "not a trusted service of the catalogue",
                fix,
            ));
            continue;
        };
        let service = &CATALOGUE[index];
        if let Some(first) = chosen.get(&index) {
            warnings.push(PolicyWarning::new(
                &at.path,
                format!(
                    "{} is already enabled by {first}; it is enabled once",
                    service.name
                ),
            ));
            continue;
        }
        chosen.insert(index, &at.path);
        if service.tags.is_empty() {
            warnings.push(PolicyWarning::new(
                &at.path,
                format!(
                    "{} has no Azure service tag: Microsoft 365 publishes its addresses \
                     separately (endpoints.office.com), so it admits no source here; add \
                     those ranges as IP rules if it must reach the vault",
                    service.name
                ),
            ));
        }
    }
    ok.then(|| chosen.keys().map(|&i| &CATALOGUE[i]).collect())
}

/// The file to read: `written` made absolute against `base_dir`.
fn resolve(
    path: &str,
    written: &str,
    base_dir: &Path,
    errors: &mut Vec<PolicyError>,
) -> Option<PathBuf> {
    if written.trim().is_empty() {
        errors.push(PolicyError::new(
            path,
            written,
            "the service-tags file path is empty",
            "write the path of a ServiceTags_*.json file, e.g. service_tags_file = \
             \"/etc/vaultfw/ServiceTags_Public.json\", or remove the key",
        ));
        return None;
    }
    Some(absolute_against(base_dir, written))
}

/// `written` made absolute against `base_dir` (lexically: links are not
/// followed, so the path names what the operator wrote).
pub(super) fn absolute_against(base_dir: &Path, written: &str) -> PathBuf {
    let joined = base_dir.join(written);
    std::path::absolute(&joined).unwrap_or(joined)
}

fn read_tags(
    file: &Path,
    written: &str,
    key_path: &str,
    errors: &mut Vec<PolicyError>,
) -> Option<ServiceTagsFile> {
    match service_tags::read(file) {
        Ok(tags) => Some(tags),
        Err(ServiceTagsError::Io { path, source }) => {
            errors.push(PolicyError::new(
                key_path,
                written,
                format!(
                    "cannot read the service-tags file {}: {source}",
                    path.display()
                ),
                "check the path (a relative path resolves against the policy file's \
                 directory) and that vaultfw may read it; Microsoft publishes the file as \
                 \"Azure IP Ranges and Service Tags – Public Cloud\"",
            ));
            None
        }
        Err(ServiceTagsError::Invalid { errors: found, .. }) => {
            let total = found.len();
            errors.extend(found.into_iter().take(MAX_TAG_FILE_ERRORS));
            if total > MAX_TAG_FILE_ERRORS {
                errors.push(PolicyError::new(
                    key_path,
                    written,
                    format!(
                        "{} more errors in the service-tags file are not listed",
                        total - MAX_TAG_FILE_ERRORS
                    ),
                    "use the file as Microsoft publishes it",
                ));
            }
            None
        }
    }
}

/// Collects the prefixes of `out.enabled`'s tags from `tags` into `out`.
fn fill(
    out: &mut TrustedServices,
    tags: &ServiceTagsFile,
    label: &str,
    warnings: &mut Vec<PolicyWarning>,
) {
    let mut kept: BTreeMap<(u32, u8), TrustedPrefix> = BTreeMap::new();
    let mut kept6: BTreeMap<(u128, u8), TrustedPrefix6> = BTreeMap::new();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for service in &out.enabled {
        for &tag_name in service.tags {
            let Some(tag) = tags.tag(tag_name) else {
                warnings.push(PolicyWarning::new(
                    label,
                    format!(
                        "the service tag \"{tag_name}\" of trusted service {} is not in this \
                         file: that tag admits no source",
                        service.name
                    ),
                ));
                continue;
            };
            if used.insert(tag_name) {
                out.ipv6_skipped += tag.ipv6_skipped;
                if let Some((path, text)) = &tag.first_host_bits {
                    warnings.push(PolicyWarning::new(
                        format!("{label}:{path}"),
                        format!(
                            "{} prefix{} of tag \"{}\" had host bits set and {} read as \
                             {} network (e.g. {text:?})",
                            tag.host_bits_cleared,
                            if tag.host_bits_cleared == 1 { "" } else { "es" },
                            tag.name,
                            if tag.host_bits_cleared == 1 {
                                "was"
                            } else {
                                "were"
                            },
                            if tag.host_bits_cleared == 1 {
                                "its"
                            } else {
                                "their"
                            },
                        ),
                    ));
                }
            }
            for net in &tag.ipv6 {
                kept6
                    .entry((u128::from(net.addr()), net.prefix_len()))
                    .or_insert_with(|| TrustedPrefix6 {
                        network: *net,
                        service: service.name,
                        tag: tag.name.clone(),
                    });
            }
            for net in &tag.ipv4 {
                kept.entry((u32::from(net.addr()), net.prefix_len()))
                    .or_insert_with(|| TrustedPrefix {
                        network: *net,
                        service: service.name,
                        tag: tag.name.clone(),
                    });
            }
        }
    }
    out.prefixes = kept.into_values().collect();
    out.prefixes_v6 = kept6.into_values().collect();
    out.change_number = tags.change_number;
}
