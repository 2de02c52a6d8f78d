using System.Collections;
using System.Globalization;
using System.Management.Automation;
using System.Management.Automation.Language;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.PowerShell;

/// <summary>
/// Completes -To and -Port of Remove-QubeTcpBinding from the bindings declared on the qube given as -From
/// (and, for -Port, the -To given).
/// </summary>
public sealed class TcpBindingCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var root = fakeBoundParameters["Root"] as string;
        var from = fakeBoundParameters["From"] as string;
        var to = fakeBoundParameters["To"] as string;
        List<TcpBinding> bindings;
        try
        {
            using var backend = BackendSelector.Open(root);
            var inventory = backend.GetInventory();
            var qubes = from is null ? inventory.Qubes : inventory.Find(from) is { } q ? [q] : [];
            bindings = qubes.SelectMany(TcpBindingDeclaration.Read).Where(d => d.Binding is not null).Select(d => d.Binding!).ToList();
        }
        catch (Exception)
        {
            // Completion never throws at the user.
            return [];
        }
        var prefix = wordToComplete.Trim('\'', '"');
        if (string.Equals(parameterName, "Port", StringComparison.OrdinalIgnoreCase))
            return bindings
                .Where(b => to is null || b.To == to)
                .Where(b => b.Port.ToString(CultureInfo.InvariantCulture).StartsWith(prefix, StringComparison.Ordinal))
                .OrderBy(b => b.Port)
                .Select(b => new CompletionResult(b.Port.ToString(CultureInfo.InvariantCulture), b.Port.ToString(CultureInfo.InvariantCulture), CompletionResultType.ParameterValue, b.Text))
                .DistinctBy(c => c.CompletionText)
                .ToList();
        return bindings
            .Where(b => b.To.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
            .OrderBy(b => b.To, StringComparer.Ordinal)
            .Select(b => new CompletionResult(b.To, b.To, CompletionResultType.ParameterValue, b.Text))
            .DistinctBy(c => c.CompletionText)
            .ToList();
    }
}
