using System.Collections;
using System.Globalization;
using System.Management.Automation;
using System.Management.Automation.Language;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.PowerShell;

/// <summary>Completes -Port with the ports declared on the qube given as -VMName (and the protocol, when given).</summary>
public sealed class PortForwardPortCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var root = fakeBoundParameters["Root"] as string;
        var vm = fakeBoundParameters["VMName"] as string;
        var protocol = fakeBoundParameters["Protocol"]?.ToString();
        List<PortForwardDeclaration> declarations;
        try
        {
            using var backend = BackendSelector.Open(root);
            declarations = PortForwardDeclaration.ReadAll(backend.GetInventory()).Where(d => d.Forward is not null && (vm is null || d.VMName == vm)).ToList();
        }
        catch (Exception)
        {
            return [];
        }
        return declarations
            .Where(d => protocol is null || d.Forward!.Protocol.ToString().Equals(protocol, StringComparison.OrdinalIgnoreCase))
            .Select(d => d.Forward!)
            .Where(f => f.Port.ToString(CultureInfo.InvariantCulture).StartsWith(wordToComplete, StringComparison.Ordinal))
            .OrderBy(f => f.Port)
            .Select(f => new CompletionResult(f.Port.ToString(CultureInfo.InvariantCulture), f.Port.ToString(CultureInfo.InvariantCulture), CompletionResultType.ParameterValue, $"{f.Text} ({f.Type})"))
            .DistinctBy(c => c.CompletionText);
    }
}
