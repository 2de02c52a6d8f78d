using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;
using QubesFirewall.Engine.Backends;

namespace QubesFirewall.PowerShell;

/// <summary>Completes qube names from the backend the command would use (its -Root, else the environment).</summary>
public sealed class QubeNameCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        var root = fakeBoundParameters["Root"] as string;
        var prefix = wordToComplete.Trim('\'', '"');
        List<string> names;
        try
        {
            using var backend = BackendSelector.Open(root);
            // Live: one admin.vm.List, not the whole inventory (one GetAll per qube) at each Tab.
            names = [.. backend.ListQubeNames()];
        }
        catch (Exception)
        {
            // Completion never throws at the user; with no backend there is nothing to offer.
            return [];
        }
        return names
            .Where(n => n.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
            .Order(StringComparer.Ordinal)
            .Select(n => new CompletionResult(n, n, CompletionResultType.ParameterValue, n));
    }
}
