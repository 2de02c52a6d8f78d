using System.Text;
using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Planning;

/// <summary>Which forwards cross each qube, built from a set of declarations (those whose chain cannot be resolved are left out, with a warning).</summary>
public sealed class ForwardLayout
{
    private readonly Dictionary<string, List<(NetworkChain, ChainHop)>> _hops = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<NetworkChain>> _targets = new(StringComparer.Ordinal);

    public static ForwardLayout Build(QubesInventory inventory, IEnumerable<PortForward> forwards, ICollection<string> warnings)
    {
        var layout = new ForwardLayout();
        foreach (var f in forwards)
        {
            if (!PortForwardPlanner.TryResolve(inventory, f, out var chain, out var why))
            {
                warnings.Add($"{f.Text} (feature {f.FeatureName} of {f.VMName}) is left out of the generated scripts: {why}");
                continue;
            }
            foreach (var hop in chain!.Hops)
            {
                if (!layout._hops.TryGetValue(hop.Name, out var list)) layout._hops[hop.Name] = list = [];
                list.Add((chain, hop));
            }
            if (!layout._targets.TryGetValue(chain.Target.Name, out var targets)) layout._targets[chain.Target.Name] = targets = [];
            targets.Add(chain);
        }
        return layout;
    }

    /// <summary>The qubes some forward crosses (hops and targets), in no particular order.</summary>
    public IEnumerable<string> Qubes => _hops.Keys.Union(_targets.Keys, StringComparer.Ordinal);

    public QubeForwards For(Qube qube) => new(qube,
        _hops.TryGetValue(qube.Name, out var h) ? h : [],
        _targets.TryGetValue(qube.Name, out var t) ? t : []);
}
