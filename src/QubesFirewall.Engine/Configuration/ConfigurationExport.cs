using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Configuration;

/// <summary>
/// The declared network state of a system as a <see cref="NetworkConfiguration"/> (Export-QubeNetworkConfiguration):
/// for every qube but dom0 and remote qubes, its netvm setting, its ipv6 feature, the rules qubesd's Get shows, and
/// the valid port forward, link and binding declarations it owns. Declarations that cannot be read are left out
/// with a warning (a file must be readable back); uuids are never written.
/// </summary>
public static class ConfigurationExport
{
    public static NetworkConfiguration Export(QubesInventory inventory, Func<string, FirewallDocument> readFirewall, DateTimeOffset now,
        Func<string, bool>? filter = null, ICollection<string>? warnings = null)
    {
        var qubes = new List<QubeConfiguration>();
        foreach (var qube in inventory.Qubes.Where(IsManaged).Where(q => filter?.Invoke(q.Name) ?? true).OrderBy(q => q.Name, StringComparer.Ordinal))
            qubes.Add(Of(inventory, qube, readFirewall(qube.Name), now, warnings));
        return new NetworkConfiguration(qubes);
    }

    /// <summary>Qubes a configuration can hold: not dom0, not remote qubes (no local networking).</summary>
    public static bool IsManaged(Qube qube) => qube.Class is not (QubeClass.AdminVM or QubeClass.RemoteVM);

    /// <summary>One qube's declared state as it is now.</summary>
    public static QubeConfiguration Of(QubesInventory inventory, Qube qube, FirewallDocument firewall, DateTimeOffset now, ICollection<string>? warnings = null)
    {
        var rules = firewall.VisibleAt(now);
        foreach (var bad in rules.Where(r => !r.IsValid))
            warnings?.Add($"{qube.Name}: the rule '{bad.Text}' would be refused by qubesd ({bad.Problems[0]}); it is exported as it is and the file will not be read back until it is fixed.");
        var forwards = new List<PortForward>();
        foreach (var d in PortForwardDeclaration.Read(qube))
            if (d.Forward is { } f) forwards.Add(f);
            else warnings?.Add($"{qube.Name}: left out {d.FeatureName}: {d.Problem}");
        var links = new List<InterVmLink>();
        foreach (var d in InterVmLinkDeclaration.Read(qube))
            if (d.Link is { } l) links.Add(l);
            else warnings?.Add($"{qube.Name}: left out {d.FeatureName}: {d.Problem}");
        var bindings = new List<TcpBinding>();
        foreach (var d in TcpBindingDeclaration.Read(qube))
            if (d.Binding is { } b) bindings.Add(b);
            else warnings?.Add($"{qube.Name}: left out {d.FeatureName}: {d.Problem}");
        return new QubeConfiguration
        {
            Name = qube.Name,
            NetVM = NetVmSetting.Of(qube),
            IPv6 = IPv6SettingOf(qube),
            Rules = rules,
            Forwards = forwards.OrderBy(f => $"{f.ProtocolText}.{f.Port:D5}", StringComparer.Ordinal).ToList(),
            Links = links.OrderBy(ConfigurationReader.LinkSortKey, StringComparer.Ordinal).ToList(),
            Bindings = bindings.OrderBy(b => $"{b.To}:{b.Port:D5}", StringComparer.Ordinal).ToList(),
        };
    }

    /// <summary>The qube's own <c>ipv6</c> feature: absent (Inherit), empty (Disabled), anything else (Enabled, as qubesd reads it).</summary>
    public static IPv6Setting IPv6SettingOf(Qube qube) =>
        !qube.Features.TryGetValue(IPv6Planner.Feature, out var value) ? IPv6Setting.Inherit
        : value.Length == 0 ? IPv6Setting.Disabled : IPv6Setting.Enabled;
}
