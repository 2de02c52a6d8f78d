namespace QubesFirewall.Tests.Shared;

/// <summary>
/// The Admin API calls (raw requests, "method+arg dom0 name qube\0payload") a netvm repair with -Start makes on
/// the sample root when sys-firewall is halted: start it, then re-attach its running clients personal and work,
/// each set to its netvm and reset to the default it follows. One fact, checked by the engine's and the cmdlet's tests.
/// </summary>
public static class SampleRepairCalls
{
    public static readonly string[] StartSysFirewallThenReattach =
    [
        "admin.vm.Start+ dom0 name sys-firewall\0",
        "admin.vm.property.Set+netvm dom0 name personal\0sys-firewall",
        "admin.vm.property.Reset+netvm dom0 name personal\0",
        "admin.vm.property.Set+netvm dom0 name work\0sys-firewall",
        "admin.vm.property.Reset+netvm dom0 name work\0",
    ];
}
