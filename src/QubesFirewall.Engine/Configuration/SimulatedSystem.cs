using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Configuration;

/// <summary>What a plan reads of a system: the inventory, rule lists, files in qubes and dom0's policy files.</summary>
public sealed record SystemReader(QubesInventory Inventory, Func<string, FirewallDocument> ReadFirewall, Func<string, string, string?> ReadFile, Dom0PolicyReader Dom0)
{
    public static SystemReader For(IQubesBackend backend) =>
        new(backend.GetInventory(), backend.GetFirewall, backend.ReadQubeFile, Dom0PolicyReader.For(backend));
}

/// <summary>
/// The system as it will be after the steps planned so far: reads go to the real system once (then are kept),
/// the steps' changes are laid over them. Each part of a configuration plan is planned on it by the existing
/// planners, so the next part sees the files, features, rules and netvms the earlier parts leave, and the one
/// step list they make together can be deployed, and rolled back, by the one <see cref="Rollout"/>.
/// </summary>
internal sealed class SimulatedSystem
{
    private readonly SystemReader _real;
    private readonly Dictionary<string, FirewallDocument> _firewalls = new(StringComparer.Ordinal);
    private readonly Dictionary<(string, string), string?> _files = [];
    private readonly Dictionary<string, string?> _dom0 = new(StringComparer.Ordinal);

    public SimulatedSystem(SystemReader real)
    {
        _real = real;
        Inventory = real.Inventory;
    }

    public QubesInventory Inventory { get; private set; }

    public FirewallDocument ReadFirewall(string vm)
    {
        if (!_firewalls.TryGetValue(vm, out var doc)) _firewalls[vm] = doc = _real.ReadFirewall(vm);
        return doc;
    }

    public string? ReadFile(string vm, string path)
    {
        if (!_files.TryGetValue((vm, path), out var content)) _files[(vm, path)] = content = _real.ReadFile(vm, path);
        return content;
    }

    public Dom0PolicyReader Dom0 => new(ListDom0, ReadDom0);

    private string? ReadDom0(string path)
    {
        if (!_dom0.TryGetValue(path, out var content)) _dom0[path] = content = _real.Dom0.Read(path);
        return content;
    }

    private IReadOnlyList<string> ListDom0(string directory)
    {
        var names = new SortedSet<string>(_real.Dom0.List(directory), StringComparer.Ordinal);
        var prefix = directory.TrimEnd('/') + "/";
        foreach (var (path, content) in _dom0)
        {
            if (!path.StartsWith(prefix, StringComparison.Ordinal) || path.IndexOf('/', prefix.Length) >= 0) continue;
            if (content is null) names.Remove(path[prefix.Length..]);
            else names.Add(path[prefix.Length..]);
        }
        return names.ToList();
    }

    /// <summary>Lays the steps' changes over the system.</summary>
    public void Apply(IEnumerable<DeploymentStep> steps)
    {
        foreach (var step in steps)
        {
            switch (step.Kind)
            {
                case DeploymentStepKind.SetFeature:
                    ChangeQube(step.VMName, q => q with { Features = With(q.Features, step.FeatureName!, step.FeatureValue) });
                    break;
                case DeploymentStepKind.RemoveFeature:
                    ChangeQube(step.VMName, q => q with { Features = With(q.Features, step.FeatureName!, null) });
                    break;
                case DeploymentStepKind.WriteFile:
                    _files[(step.VMName, step.Path!)] = step.Content;
                    break;
                case DeploymentStepKind.WriteDom0File:
                    _dom0[step.Path!] = step.Content;
                    break;
                case DeploymentStepKind.RemoveDom0File:
                    _dom0[step.Path!] = null;
                    break;
                case DeploymentStepKind.EditFirewall:
                    _firewalls[step.VMName] = new FirewallDocument(step.Firewall!.Preview.Rules.ToList(), 2, true);
                    break;
                case DeploymentStepKind.SetProperty when step.PropertyName == "netvm":
                    ChangeQube(step.VMName, q => step.PropertyValue switch
                    {
                        null => q with
                        {
                            NetVmSource = NetVmSource.Default,
                            NetVM = q.Class is QubeClass.TemplateVM ? null : Inventory.DefaultNetVM,
                            Properties = With(q.Properties, "netvm", null),
                        },
                        "" => q with { NetVmSource = NetVmSource.None, NetVM = null, Properties = With(q.Properties, "netvm", "") },
                        var name => q with { NetVmSource = NetVmSource.Explicit, NetVM = name, Properties = With(q.Properties, "netvm", name) },
                    });
                    break;
            }
        }
    }

    private static IReadOnlyDictionary<string, string> With(IReadOnlyDictionary<string, string> map, string key, string? value)
    {
        var copy = new Dictionary<string, string>(map, StringComparer.Ordinal);
        if (value is null) copy.Remove(key);
        else copy[key] = value;
        return copy;
    }

    private void ChangeQube(string name, Func<Qube, Qube> change)
    {
        var qubes = Inventory.Qubes.Select(q => q.Name == name ? change(q) : q).ToList();
        var changed = new QubesInventory(qubes, Inventory.GlobalProperties, Inventory.Labels, Inventory.SourcePath);
        // addresses as qubesd computes them, for the changed netvms and ipv6 features
        Inventory = new QubesInventory(changed.Qubes.Select(q => WithAddresses(changed, q)).ToList(), changed.GlobalProperties, changed.Labels, changed.SourcePath);
    }

    private static Qube WithAddresses(QubesInventory inventory, Qube q)
    {
        if (q.Class is QubeClass.AdminVM or QubeClass.RemoteVM) return q;
        var networked = q.ProvidesNetwork || q.NetVM is not null;
        var disposable = q.Class == QubeClass.DispVM;
        var id = disposable ? q.DispId : q.Qid;
        var ip = q.Properties.TryGetValue("ip", out var fixedIp) && fixedIp.Length > 0 ? q.IP
            : networked && id is { } i ? QubesXml.IPv4For(i, disposable) : null;
        var ip6 = q.Properties.TryGetValue("ip6", out var fixedIp6) && fixedIp6.Length > 0 ? q.IPv6
            : networked && id is { } j && IPv6Planner.Decide(inventory, q).Enabled ? QubesXml.IPv6For(j, disposable) : null;
        return q with { IP = ip, IPv6 = ip6 };
    }
}
